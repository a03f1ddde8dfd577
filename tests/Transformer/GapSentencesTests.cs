using Nanolora.Transformer;
using Xunit;

namespace Nanolora.Tests.Transformer;

public sealed class GapSentencesTests
{
    [Fact]
    public void SplitsOnSentenceEndsButNotAbbreviationsOrVersions()
    {
        var s = GapSentences.Sentences("Tool for e.g. images in v2.0 format. It converts files. 3D support is included!");
        Assert.Equal(["Tool for e.g. images in v2.0 format.", "It converts files.", "3D support is included!"], s);
    }

    [Fact]
    public void MasksTheSentenceThatOverlapsTheRestMost()
    {
        // Real Debian description (0ad): the first sentence shares the most words with the others.
        const string text = "0 A.D. is a real-time strategy game of ancient warfare. In short, it is a war game that allows players to relive the history of ancient warfare. The project is highly ambitious.";
        var e = GapSentences.Build(text)!;
        Assert.Equal("In short, it is a war game that allows players to relive the history of ancient warfare.", e.Target);
        Assert.Equal("0 A.D. is a real-time strategy game of ancient warfare. [MASK] The project is highly ambitious.", e.Source);
        Assert.Null(GapSentences.Build("A single sentence only."));
        Assert.Null(GapSentences.Build("Short one. Tiny."));
    }
}
