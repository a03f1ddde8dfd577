using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>
/// BLEU against the expected values in sacrebleu's own test suite (mjpost/sacrebleu test/test_bleu.py and
/// test/test_sentence_bleu.py, 2.6.0), to their tolerances. Real-data agreement is in <see cref="SacrebleuAgreementTests"/>.
/// </summary>
public class BleuTests
{
    static void Near(double expected, double actual, double tolerance, string what) =>
        Assert.True(Math.Abs(expected - actual) < tolerance, $"{what}: expected {expected:R}, got {actual:R}");

    // sacrebleu's README example: three segments, two reference streams.
    static readonly string[] Hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."];
    static readonly IReadOnlyList<IReadOnlyList<string?>> Refs =
    [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ];

    /// <summary>sacrebleu.raw_corpus_bleu: no tokenization, floor smoothing, effective order.</summary>
    static BleuOptions Raw(double? floor) => new(Tokenize: "none", SmoothMethod: "floor", SmoothValue: floor, EffectiveOrder: true);

    [Fact]
    public void CorpusBleuMatchesSacrebleu()
    {
        Near(48.530827, Bleu.Corpus(Hyps, Refs).Score, 1e-6, "default (13a, exp)");
        Near(48.530827, Bleu.Corpus(Hyps, Refs, new BleuOptions(Tokenize: "13a")).Score, 1e-6, "13a");
        Near(49.1919566, Bleu.Corpus(Hyps, Refs, new BleuOptions(Tokenize: "none")).Score, 1e-6, "tokenize none");
        Near(48.530827, Bleu.Corpus(Hyps, Refs, new BleuOptions(SmoothMethod: "none")).Score, 1e-6, "smooth none");
        Assert.Equal(0.0, Bleu.Corpus(["", "", ""], Refs).Score);   // empty hypotheses are scored, not removed
    }

    [Theory]
    [InlineData(1, "77.65")]
    [InlineData(2, "60.50")]
    [InlineData(3, "53.93")]
    [InlineData(4, "48.53")]
    [InlineData(5, "46.14")]
    [InlineData(6, "43.28")]
    public void MaxNgramOrderMatchesSacrebleu(int order, string expected) =>
        Assert.Equal(expected, Bleu.Corpus(Hyps, Refs, new BleuOptions(MaxNgramOrder: order)).Score.ToString("F2", System.Globalization.CultureInfo.InvariantCulture));

    [Theory]
    [InlineData(new[] { "this is a test", "another test" }, new[] { "ref1", "ref2" }, 0.0)]   // no match at all (#141)
    [InlineData(new[] { "this is a test" }, new[] { "this is a test" }, 1.0)]
    [InlineData(new[] { "this is a fest" }, new[] { "this is a test" }, 0.223606797749979)]
    [InlineData(new[] { "test" }, new[] { "a test" }, 0.3678794411714425)]                    // effective order
    [InlineData(new[] { "a test" }, new[] { "a test" }, 1.0)]
    [InlineData(new[] { "a little test" }, new[] { "a test" }, 0.03218297948685433)]
    public void RawCorpusBleuMatchesSacrebleu(string[] hypotheses, string[] references, double expected) =>
        Near(expected, Bleu.Corpus(hypotheses, references, Raw(0.01)).Score / 100, 1e-8, string.Join(" | ", hypotheses));

    [Fact]
    public void StatisticsAndFloorOffsetMatchSacrebleu()
    {
        var score = Bleu.Corpus(["am I am a character sequence"], ["I am a symbol string sequence a a"], Raw(0.01));
        Assert.Equal([4.0, 2, 1, 0], score.Counts);
        Assert.Equal([6.0, 5, 4, 3], score.Totals);
        Assert.Equal(0.0, Bleu.Corpus(["am I am a character sequence"], ["I am a symbol string sequence a a"], Raw(0.0)).Score);
        Near(0.1555722182, Bleu.Corpus(["am I am a character sequence"], ["I am a symbol string sequence a a"], Raw(null)).Score / 100, 1e-8, "default floor 0.1");
    }

    [Fact]
    public void ComputeFromStatisticsMatchesSacrebleu()
    {
        Near(0.8375922397, Bleu.Compute([9, 7, 5, 3], [10, 8, 6, 4], 11, 11).Score / 100, 1e-8, "test_scoring");
        // test_degenerate_statistics: exactly 0 whatever the floor offset.
        foreach (var (c, t, sys, refLen, offset) in new (double[], double[], long, long, double)[]
        {
            ([0, 0, 0, 0], [4, 4, 2, 1], 0, 1, 0.0), ([0, 0, 0, 0], [10, 11, 12, 0], 14, 10, 0.0), ([0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0.0),
            ([6, 5, 4, 0], [6, 5, 4, 3], 6, 6, 0.0), ([0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0.1), ([0, 0, 0, 0], [0, 0, 0, 0], 1, 5, 0.01),
        })
            Assert.Equal(0.0, Bleu.Compute(c, t, sys, refLen, "floor", offset).Score);
    }

    // test_sentence_bleu.py (#98): a Romanian sentence, effective order on, tolerance 1e-3.
    const string SentenceRef = "producţia de zahăr brut se exprimă în zahăr alb;";
    const string SentenceSys = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;";

    [Theory]
    [InlineData("exp", null, "13a", 8.493)]
    [InlineData("none", null, "13a", 0.0)]
    [InlineData("floor", null, "13a", 4.51688)]
    [InlineData("floor", 0.1, "13a", 4.51688)]
    [InlineData("floor", 0.5, "13a", 10.10)]
    [InlineData("add-k", null, "13a", 14.882)]
    [InlineData("add-k", 1.0, "13a", 14.882)]
    [InlineData("add-k", 2.0, "13a", 21.389)]
    [InlineData("exp", null, "none", 7.347)]
    public void SentenceBleuMatchesSacrebleu(string smooth, double? value, string tokenize, double expected)
    {
        var o = new BleuOptions(Tokenize: tokenize, SmoothMethod: smooth, SmoothValue: value, EffectiveOrder: true);
        Near(expected, Bleu.Sentence(SentenceSys, [SentenceRef], o).Score, 1e-3, $"{smooth} {value} {tokenize}");
        Assert.Equal(0.0, Bleu.Sentence("this is a cat", ["okay thanks"], o).Score);   // #141: no match is 0 whatever the smoothing
    }

    [Fact]
    public void SentenceDefaultsToEffectiveOrder()
    {
        // "a test" vs "a test ok": 3- and 4-grams do not exist in the hypothesis; with effective order they drop out.
        var s = Bleu.Sentence("a test", ["a test ok"]);
        Assert.Equal(100 * Math.Exp(1 - 3.0 / 2), s.Score, 9);   // precisions 100, 100; BP e^(1 - 3/2)
        Assert.Equal(0.0, Bleu.Corpus(["a test"], ["a test ok"]).Score, 9);   // corpus BLEU keeps all four orders
    }

    [Fact]
    public void BadInputIsRefused()
    {
        Assert.Throws<ArgumentException>(() => Bleu.Corpus(Array.Empty<string>(), Array.Empty<string>()));
        Assert.Throws<ArgumentException>(() => Bleu.Corpus(["a"], ["a"], new BleuOptions(Tokenize: "intl")));
        Assert.Throws<ArgumentException>(() => Bleu.Corpus(["a"], ["a"], new BleuOptions(SmoothMethod: "add-one")));
        Assert.Throws<ArgumentException>(() => Bleu.Corpus(["a", "b"], ["a"]));
    }
}
