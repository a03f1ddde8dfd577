using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

public class RougeTests
{
    static void Is(double p, double r, double f, RougeScore s, string what)
    {
        Assert.True(Math.Abs(s.Precision - p) < 1e-12, $"{what}: precision expected {p:R}, got {s.Precision:R}");
        Assert.True(Math.Abs(s.Recall - r) < 1e-12, $"{what}: recall expected {r:R}, got {s.Recall:R}");
        Assert.True(Math.Abs(s.F - f) < 1e-12, $"{what}: F expected {f:R}, got {s.F:R}");
    }

    [Fact]
    public void TokenizeLowercasesAndSplitsOnNonAlphanumerics()
    {
        // "über": ü is outside [a-z0-9], so it separates, leaving "ber".
        Assert.Equal(["hello", "world", "it", "s", "2024", "ber", "x86", "64"], Rouge.Tokenize("Hello, WORLD! It's 2024—über x86_64"));
        Assert.Empty(Rouge.Tokenize(" ... !!! \n"));
        Assert.Empty(Rouge.Tokenize(""));
    }

    [Fact]
    public void SingleSentenceHandWorked()
    {
        // pred: the cat sat on the mat (6)   ref: the cat is on the mat (6)
        // unigrams: the min(2,2) + cat + on + mat = 5 → P = R = F = 5/6
        // bigrams: pred {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat is, is on, on the, the mat}
        //          overlap {the cat, on the, the mat} = 3 → 3/5
        // LCS: the cat on the mat = 5 → 5/6; Lsum with one sentence each equals L.
        var r = Rouge.Score("The cat sat on the mat.", "the cat is on the mat");
        Is(5 / 6.0, 5 / 6.0, 5 / 6.0, r.Rouge1, "rouge1");
        Is(0.6, 0.6, 0.6, r.Rouge2, "rouge2");
        Is(5 / 6.0, 5 / 6.0, 5 / 6.0, r.RougeL, "rougeL");
        Is(5 / 6.0, 5 / 6.0, 5 / 6.0, r.RougeLsum, "rougeLsum");
    }

    [Fact]
    public void AsymmetricLengthsGivePrecisionAndRecallTheRightWayRound()
    {
        // pred: a b (2)   ref: a b c d (4)
        // rouge1: overlap 2 → P 2/2 = 1, R 2/4 = 0.5, F = 2*0.5/1.5 = 2/3
        // rouge2: overlap {a b} = 1 → P 1/1, R 1/3, F = 2*(1/3)/(4/3) = 0.5
        // L: LCS 2 → as rouge1
        var r = Rouge.Score("a b", "a b c d");
        Is(1, 0.5, 2 / 3.0, r.Rouge1, "rouge1");
        Is(1, 1 / 3.0, 0.5, r.Rouge2, "rouge2");
        Is(1, 0.5, 2 / 3.0, r.RougeL, "rougeL");
    }

    [Fact]
    public void RepeatedTokensAreClipped()
    {
        // pred: the the the the (4)   ref: the cat (2)
        // rouge1: min(4, 1) = 1 → P 1/4, R 1/2, F = 2*(1/8)/(3/4) = 1/3
        // rouge2: pred {the the ×3}, ref {the cat} → 0
        // L: LCS = "the" = 1 → as rouge1
        var r = Rouge.Score("the the the the", "the cat");
        Is(0.25, 0.5, 1 / 3.0, r.Rouge1, "rouge1");
        Is(0, 0, 0, r.Rouge2, "rouge2");
        Is(0.25, 0.5, 1 / 3.0, r.RougeL, "rougeL");
    }

    [Fact]
    public void EmptyPredictionOrReferenceScoresZero()
    {
        foreach (var (p, rf) in new[] { ("", "the cat"), ("the cat", ""), ("", ""), ("!!!", "?"), ("\n\n", "a\nb") })
        {
            var r = Rouge.Score(p, rf);
            foreach (var s in new[] { r.Rouge1, r.Rouge2, r.RougeL, r.RougeLsum })
                Is(0, 0, 0, s, $"'{p}' vs '{rf}'");
        }
    }

    [Fact]
    public void LsumUnionsLcsAcrossPredictionSentences()
    {
        // ref sentence: w1 w2 w3 w4; pred sentences: "w3 w4", "w1 w2".
        // Lsum: LCS(r, c1) = {w3 w4}, LCS(r, c2) = {w1 w2}; union = 4 hits; m = 4, n = 4 → P = R = F = 1.
        // Plain L sees "w3 w4 w1 w2" against "w1 w2 w3 w4": LCS 2 → 0.5.
        var r = Rouge.Score("w3 w4\nw1 w2", "w1 w2 w3 w4");
        Is(1, 1, 1, r.RougeLsum, "rougeLsum");
        Is(0.5, 0.5, 0.5, r.RougeL, "rougeL");
    }

    [Fact]
    public void LsumPaperExample()
    {
        // ROUGE paper §3.2: r = w1 w2 w3 w4 w5; c1 = w1 w2 w6 w7 w8; c2 = w1 w3 w8 w9 w5.
        // union LCS = {w1 w2} ∪ {w1 w3 w5} = w1 w2 w3 w5 → 4 hits; m = 5, n = 10
        // P = 0.4, R = 0.8, F = 2*0.32/1.2 = 8/15
        var r = Rouge.Score("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", "w1 w2 w3 w4 w5");
        Is(0.4, 0.8, 8 / 15.0, r.RougeLsum, "rougeLsum");
    }

    [Fact]
    public void LsumDoesNotCountATokenTwice()
    {
        // ref sentences "w1 w2" and "w1 w2"; pred "w1 w2". Each ref sentence's union LCS is {w1 w2}, but the
        // prediction has one w1 and one w2, so only the first sentence scores: hits = 2, m = 4, n = 2.
        // P = 1, R = 0.5, F = 2/3 (without the guard P would be 2).
        var r = Rouge.Score("w1 w2", "w1 w2\nw1 w2");
        Is(1, 0.5, 2 / 3.0, r.RougeLsum, "rougeLsum");
        // Blank and punctuation-only lines are sentences with no tokens and change nothing.
        Is(1, 0.5, 2 / 3.0, Rouge.Score("w1 w2\n\n...", "w1 w2\n\nw1 w2").RougeLsum, "rougeLsum with blank lines");
    }

    [Theory]
    [InlineData("running", "run")]
    [InlineData("ponies", "poni")]
    [InlineData("caresses", "caress")]
    [InlineData("cats", "cat")]
    [InlineData("agreed", "agre")]
    [InlineData("relational", "relat")]
    [InlineData("generalizations", "gener")]
    [InlineData("happy", "happi")]
    [InlineData("enjoy", "enjoy")]
    [InlineData("hopping", "hop")]
    [InlineData("falling", "fall")]
    [InlineData("filing", "file")]
    [InlineData("controlling", "control")]
    [InlineData("skies", "sky")]
    [InlineData("dying", "die")]
    [InlineData("news", "news")]
    [InlineData("dies", "die")]
    [InlineData("spied", "spi")]
    [InlineData("feed", "feed")]
    [InlineData("adjustment", "adjust")]
    [InlineData("adoption", "adopt")]
    [InlineData("hopefulness", "hope")]
    [InlineData("geology", "geolog")]
    public void PorterStemmerMatchesNltk(string word, string stem) => Assert.Equal(stem, PorterStemmer.Stem(word));

    [Fact]
    public void StemmerAppliesOnlyToTokensLongerThanThreeCharacters()
    {
        // "was" (3 chars) would stem to "wa" but is left alone, as rouge_score does.
        Assert.Equal(["the", "cat", "was", "run", "poni"], Rouge.Tokenize("The cats was RUNNING ponies", useStemmer: true));
        Assert.Equal(["the", "cats", "was", "running", "ponies"], Rouge.Tokenize("The cats was RUNNING ponies"));
        Assert.Equal("wa", PorterStemmer.Stem("was"));
    }

    [Fact]
    public void StemmingMatchesInflections()
    {
        // pred: the cats running / ref: the cat runs → stemmed both to "the cat run": all 1.
        // Without stemming only "the" matches: 1/3.
        Is(1, 1, 1, Rouge.Score("the cats running", "the cat runs", useStemmer: true).Rouge1, "stemmed");
        Is(1 / 3.0, 1 / 3.0, 1 / 3.0, Rouge.Score("the cats running", "the cat runs").Rouge1, "unstemmed");
    }

    [Fact]
    public void AverageIsTheMeanOfPerExampleScores()
    {
        // Example 1: identical → rouge1 (1, 1, 1). Example 2: "a b" vs "a b c d" → rouge1 (1, 0.5, 2/3).
        // Mean: (1, 0.75, 5/6).
        var avg = Rouge.Average(["x y z", "a b"], ["x y z", "a b c d"]);
        Is(1, 0.75, 5 / 6.0, avg.Rouge1, "rouge1 mean");
        // rouge2: (1,1,1) and (1, 1/3, 0.5) → (1, 2/3, 0.75)
        Is(1, 2 / 3.0, 0.75, avg.Rouge2, "rouge2 mean");
        Assert.Throws<ArgumentException>(() => Rouge.Average(["a"], ["a", "b"]));
        Assert.Throws<ArgumentException>(() => Rouge.Average([], []));
    }
}
