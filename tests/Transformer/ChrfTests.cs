using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>
/// chrF against the expected scores in sacrebleu's own test suite (mjpost/sacrebleu test/test_chrf.py, 2.6.0), to
/// its tolerance of 1e-4. Real-data agreement with a sacrebleu run is in <see cref="SacrebleuAgreementTests"/>.
/// </summary>
public class ChrfTests
{
    const double Tolerance = 1e-4;

    static void Near(double expected, double actual, string what) =>
        Assert.True(Math.Abs(expected - actual) < Tolerance, $"{what}: expected {expected:R}, got {actual:R}");

    // test_chrf: corpus_chrf(..., char_order=6, word_order=0, beta=3, eps_smoothing=True)
    [Theory]
    [InlineData("abcdefg", "hijklmnop", 0.0)]
    [InlineData("a", "b", 0.0)]
    [InlineData("", "b", 0.0)]
    [InlineData("", "ref", 0.0)]
    [InlineData("", "reference", 0.0)]
    [InlineData("aa", "ab", 8.3333)]
    [InlineData("a", "a", 16.6667)]
    [InlineData("a b c", "a b c", 50.0)]
    [InlineData("a b c", "abc", 50.0)]
    [InlineData(" risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists .",
        "risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists .", 63.361730)]
    [InlineData(" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. ",
        "Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich.", 64.1302698)]
    [InlineData("Niemand hat die Absicht, eine Mauer zu errichten", "Niemand hat die Absicht, eine Mauer zu errichten", 100.0)]
    public void EpsSmoothingMatchesSacrebleu(string hypothesis, string reference, double expected) =>
        Near(expected, Chrf.Corpus([hypothesis], [reference], new ChrfOptions(Beta: 3, EpsSmoothing: true)), $"'{hypothesis}' vs '{reference}'");

    [Fact]
    public void EpsSmoothingSumsStatisticsOverTheCorpus() =>
        Near(8.3333, Chrf.Corpus(["a", "b"], ["a", "c"], new ChrfOptions(Beta: 3, EpsSmoothing: true)), "two segments");

    // test_chrf_eff_order: sacrebleu's default averaging (only the orders both sides have), beta=3
    [Theory]
    [InlineData(new[] { "a" }, new[] { "a" }, 100.0)]
    [InlineData(new[] { "" }, new[] { "reference" }, 0.0)]
    [InlineData(new[] { "a b c" }, new[] { "a b c" }, 100.0)]
    [InlineData(new[] { "a b c" }, new[] { "abc" }, 100.0)]
    [InlineData(new[] { "" }, new[] { "c" }, 0.0)]
    [InlineData(new[] { "a", "b" }, new[] { "a", "c" }, 50.0)]
    [InlineData(new[] { "aa" }, new[] { "ab" }, 25.0)]
    public void EffectiveOrderMatchesSacrebleu(string[] hypotheses, string[] references, double expected) =>
        Near(expected, Chrf.Corpus(hypotheses, references, new ChrfOptions(Beta: 3)), string.Join(" | ", hypotheses));

    // test_chrf_keep_whitespace: remove_whitespace=False, beta=3
    [Theory]
    [InlineData("Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich.",
        "Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich.", 67.3481606)]
    [InlineData("risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists .",
        "risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists .", 65.2414427)]
    public void KeepingWhitespaceMatchesSacrebleu(string hypothesis, string reference, double expected) =>
        Near(expected, Chrf.Corpus([hypothesis], [reference], new ChrfOptions(Beta: 3, Whitespace: true)), hypothesis);

    // test_chrf_sentence_level: sentence_chrf(hyp, refs, eps_smoothing=True) with the default beta 2
    [Theory]
    [InlineData("Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
        "Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře.", 39.14078509)]
    [InlineData("Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
        "A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři.", 31.22557079)]
    [InlineData("Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
        "Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli.", 57.15704367)]
    public void SentenceLevelMatchesSacrebleu(string hypothesis, string reference, double expected) =>
        Near(expected, Chrf.Sentence(hypothesis, [reference], new ChrfOptions(EpsSmoothing: true)), hypothesis);

    [Fact]
    public void HandWorkedDefaultScore()
    {
        // "ab" vs "abc", chrF2 (β² = 4), effective order: orders 1 and 2 exist on both sides, 3..6 only in the
        // reference (they drop out). Order 1: P 2/2, R 2/3; order 2: P 1/1, R 1/2. Mean P = 1, mean R = 7/12.
        // F = 5·P·R / (4P + R) = (35/12) / (55/12) = 7/11.
        Near(100 * 7.0 / 11, Chrf.Sentence("ab", ["abc"]), "ab vs abc");
        Assert.Equal(100.0, Chrf.Sentence("a b", ["ab"]), 12);   // whitespace is removed before the character n-grams
        Assert.NotEqual(100.0, Chrf.Sentence("a b", ["ab"], ChrfOptions.PlusPlus), 6);   // but chrF++'s words differ
    }

    [Fact]
    public void SeveralReferencesKeepTheBestOne()
    {
        double alone = Chrf.Sentence("the cat sat", ["the cat sat"]);
        Assert.Equal(100.0, alone, 12);
        Assert.Equal(alone, Chrf.Sentence("the cat sat", ["a dog ran", "the cat sat"]), 12);
        Assert.Equal(alone, Chrf.Corpus(["the cat sat"], [(IReadOnlyList<string?>)["a dog ran"], ["the cat sat"]]), 12);
    }

    [Fact]
    public void OptionsNameTheVariantAsSacrebleu()
    {
        Assert.Equal("chrF2", ChrfOptions.Default.Name);
        Assert.Equal("chrF2++", ChrfOptions.PlusPlus.Name);
    }

    [Fact]
    public void BadInputIsRefused()
    {
        Assert.Throws<ArgumentException>(() => Chrf.Corpus(Array.Empty<string>(), Array.Empty<string>()));
        Assert.Throws<ArgumentException>(() => Chrf.Corpus(["a", "b"], ["a"]));
        Assert.Throws<ArgumentException>(() => Chrf.Corpus(["a"], [(IReadOnlyList<string?>)[null]]));
        Assert.Throws<ArgumentException>(() => Chrf.Sentence("a", []));
    }
}
