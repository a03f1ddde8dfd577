using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

public sealed class SubwordTokenizerTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nanolora-tok-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static readonly Lazy<IReadOnlyList<Example>> Debian = new(() =>
        JsonlDataset.Load(DataPaths.Find("debian-descriptions.jsonl.gz"), "validation", limit: 300));

    static IEnumerable<string> Texts(IEnumerable<Example> xs) => xs.SelectMany(x => new[] { x.Source, x.Target });

    [Fact]
    public void Gpt2VocabularyIsTheFullOne() => Assert.Equal(50257, SubwordTokenizer.Gpt2VocabSize);

    [Fact]
    public void RealSentencesRoundTripWhenAllIdsAreInVocabulary()
    {
        var tok = SubwordTokenizer.Build(Texts(Debian.Value), maxVocab: 60000);
        Assert.True(tok.VocabSize > 1000 && tok.VocabSize < 50257 + 4, $"vocab size {tok.VocabSize}");
        foreach (var s in Texts(Debian.Value))
        {
            var ids = tok.Encode(s);
            Assert.DoesNotContain(SubwordTokenizer.Unk, ids);
            Assert.All(ids, id => Assert.InRange(id, 4, tok.VocabSize - 1));
            Assert.Equal(s, tok.Decode(ids));
        }
    }

    [Fact]
    public void BuildKeepsMostFrequentIdsTiesBySmallerIdAndHonoursLimits()
    {
        string[] corpus = ["red red red blue blue green", "red blue", "green yellow"];
        // Reference counts straight from GPT-2; the printable ASCII characters always come first.
        var characters = Enumerable.Range(32, 95).SelectMany(c => SubwordTokenizer.Gpt2.EncodeToIds(((char)c).ToString())).Distinct().ToArray();
        Assert.Equal(95, characters.Length);
        var counts = corpus.SelectMany(t => SubwordTokenizer.Gpt2.EncodeToIds(t)).GroupBy(i => i).ToDictionary(g => g.Key, g => g.Count());
        var expected = counts.Where(kv => !characters.Contains(kv.Key)).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).Select(kv => kv.Key).ToArray();

        var all = SubwordTokenizer.Build(corpus, maxVocab: 1000);
        Assert.Equal(characters.Concat(expected), all.Gpt2Ids);
        Assert.Equal(4 + 95 + expected.Length, all.VocabSize);

        var top2 = SubwordTokenizer.Build(corpus, maxVocab: 4 + 95 + 2);
        Assert.Equal(characters.Concat(expected[..2]), top2.Gpt2Ids);
        Assert.Equal(101, top2.VocabSize);

        var frequent = SubwordTokenizer.Build(corpus, maxVocab: 1000, minCount: 3);
        Assert.Equal(characters.Concat(counts.Where(kv => kv.Value >= 3 && !characters.Contains(kv.Key)).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).Select(kv => kv.Key)), frequent.Gpt2Ids);

        Assert.Throws<ArgumentException>(() => SubwordTokenizer.Build(corpus, maxVocab: 98));
        Assert.Throws<ArgumentException>(() => SubwordTokenizer.Build(corpus, maxVocab: 200, minCount: 0));
    }

    [Fact]
    public void RareTokensFallBackToCharactersAndNonAsciiToUnk()
    {
        var tok = SubwordTokenizer.Build(["hello world"], maxVocab: 200);
        var ids = tok.Encode("hello zebra world");
        Assert.DoesNotContain(SubwordTokenizer.Unk, ids);             // " zebra" is spelled out character by character
        Assert.Equal(tok.Encode("hello"), ids[..1]);
        Assert.Equal(" zebra".Length, ids.Length - 2);
        Assert.Equal("hello zebra world", tok.Decode(ids));
        var accented = tok.Encode("hello café");
        Assert.Contains(SubwordTokenizer.Unk, accented);               // é is not a kept character
        Assert.Equal("hello caf", tok.Decode(accented));
    }

    [Fact]
    public void LongestMatchSpellsAnUnkeptTokenWithTheLongestKeptPieces()
    {
        // Kept: "hello", " hel", "lo" (and the characters); GPT-2's single token " hello" is not kept.
        var tok = SubwordTokenizer.Build(["hello", " hel", "lo"], maxVocab: 200);
        Assert.Equal(TokenFallback.LongestMatch, tok.Fallback);
        Assert.Single(tok.Encode(" hel"));
        Assert.Single(tok.Encode("lo"));
        var ids = tok.Encode(" hello");
        Assert.Equal(tok.Encode(" hel").Concat(tok.Encode("lo")), ids);      // not " " + "hello", not six characters
        Assert.Equal(" hello", tok.Decode(ids));
        var spelled = tok.WithFallback(TokenFallback.Characters).Encode(" hello");
        Assert.Equal(" hello".Length, spelled.Length);
        Assert.Equal(" hello", tok.Decode(spelled));
    }

    [Fact]
    public void LongestMatchRoundTripsRealTextInFewerTokensThanCharacters()
    {
        var tok = SubwordTokenizer.Build(Texts(Debian.Value.Take(100)), maxVocab: 600);
        var characters = tok.WithFallback(TokenFallback.Characters);
        int longest = 0, chars = 0;
        foreach (var s in Texts(Debian.Value.Skip(100).Take(100)).Where(s => s.All(char.IsAscii)))
        {
            var ids = tok.Encode(s);
            Assert.Equal(s, tok.Decode(ids));
            Assert.Equal(s, characters.Decode(characters.Encode(s)));
            longest += ids.Length;
            chars += characters.Encode(s).Length;
        }
        Assert.True(longest < chars * 0.9, $"longest-match {longest} tokens vs characters {chars}");
    }

    [Fact]
    public void FallbackKindIsSavedAndOldFilesKeepCharacterSpelling()
    {
        var tok = SubwordTokenizer.Build(["hello", " hel", "lo"], maxVocab: 200);
        string p = Path.Combine(dir, "tok.json");
        tok.Save(p);
        Assert.Equal(TokenFallback.LongestMatch, SubwordTokenizer.Load(p).Fallback);
        tok.WithFallback(TokenFallback.Characters).Save(p);
        Assert.Equal(TokenFallback.Characters, SubwordTokenizer.Load(p).Fallback);
        // A file written before the field existed: its model was trained on character spellings.
        File.WriteAllText(p, File.ReadAllText(p).Replace("\"fallback\":\"characters\",", ""));
        Assert.DoesNotContain("fallback", File.ReadAllText(p));
        var old = SubwordTokenizer.Load(p);
        Assert.Equal(TokenFallback.Characters, old.Fallback);
        Assert.Equal(" hello".Length, old.Encode(" hello").Length);
    }

    [Fact]
    public void DecodeSkipsSpecialsStopsAtEosAndRejectsOutOfRangeIds()
    {
        var tok = SubwordTokenizer.Build(["one two three"], maxVocab: 200);
        var ids = tok.Encode("one two three");
        int[] noisy = [SubwordTokenizer.Bos, SubwordTokenizer.Pad, .. ids[..2], SubwordTokenizer.Unk, SubwordTokenizer.Eos, ids[2], SubwordTokenizer.Pad];
        Assert.Equal("one two", tok.Decode(noisy));
        Assert.Equal("", tok.Decode([SubwordTokenizer.Eos, .. ids]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([-1]));
    }

    [Fact]
    public void TruncationKeepsAPrefixAndRoomForSpecials()
    {
        var text = Debian.Value.Select(e => e.Source).OrderByDescending(s => s.Length).First();
        var tok = SubwordTokenizer.Build([text], maxVocab: 10000);
        var full = tok.Encode(text);
        Assert.True(full.Length > 40, $"longest source has only {full.Length} tokens");

        foreach (int max in new[] { 1, 5, 17, full.Length - 1, full.Length, full.Length + 3 })
            Assert.Equal(full[..Math.Min(max, full.Length)], tok.Encode(text, max));

        var both = tok.Encode(text, 10, addBos: true, addEos: true);
        Assert.Equal([SubwordTokenizer.Bos, .. full[..8], SubwordTokenizer.Eos], both);
        Assert.Equal([SubwordTokenizer.Bos, SubwordTokenizer.Eos], tok.Encode(text, 2, addBos: true, addEos: true));
        Assert.Equal([SubwordTokenizer.Bos, .. full, SubwordTokenizer.Eos], tok.Encode(text, addBos: true, addEos: true));
        Assert.Empty(tok.Encode(text, 0));
        Assert.Throws<ArgumentException>(() => tok.Encode(text, 1, addBos: true, addEos: true));

        // Characters that take several byte tokens (’ is two, 豆腐 more): the library's bounded encode will not stop
        // inside one and returns fewer tokens than asked; every cut must still be the exact prefix.
        string multi = "Tofu (豆腐) is jargon for \"�\". It’s designed – really.";
        var multiTok = SubwordTokenizer.Build([multi], maxVocab: 1000);
        var multiFull = multiTok.Encode(multi);
        for (int max = 1; max <= multiFull.Length + 1; max++)
            Assert.Equal(multiFull[..Math.Min(max, multiFull.Length)], multiTok.Encode(multi, max));
        Assert.Equal(multi, multiTok.Decode(multiFull));

        // A single pre-token longer than the request's slack (a long unbroken run) still truncates to an exact prefix.
        string run = string.Concat(Enumerable.Repeat("qzxvbk", 200)); // one 1200-letter pre-token
        var runTok = SubwordTokenizer.Build([run], maxVocab: 1000);
        var runFull = runTok.Encode(run);
        Assert.Equal(runFull[..7], runTok.Encode(run, 7));
    }

    [Fact]
    public void SaveLoadIsIdentity()
    {
        var tok = SubwordTokenizer.Build(Texts(Debian.Value.Take(50)), maxVocab: 500);
        string p = Path.Combine(dir, "tok.json");
        tok.Save(p);
        Assert.Contains("\"gpt2-subset\"", File.ReadAllText(p));
        var back = SubwordTokenizer.Load(p);
        Assert.Equal(tok.VocabSize, back.VocabSize);
        Assert.Equal(tok.Gpt2Ids, back.Gpt2Ids);
        foreach (var s in Texts(Debian.Value.Skip(50).Take(20))) Assert.Equal(tok.Encode(s), back.Encode(s));
        tok.Save(p); // overwrite in place
        Assert.Single(Directory.GetFiles(dir));
    }

    [Theory]
    [InlineData("not json {", "not valid JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("""{"kind":"bpe","specials":{"pad":0,"bos":1,"eos":2,"unk":3},"gpt2_ids":[5]}""", "expected 'gpt2-subset'")]
    [InlineData("""{"specials":{"pad":0,"bos":1,"eos":2,"unk":3},"gpt2_ids":[5]}""", "\"kind\" is missing")]
    [InlineData("""{"kind":"gpt2-subset","gpt2_ids":[5]}""", "missing \"specials\"")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":1,"bos":0,"eos":2,"unk":3},"gpt2_ids":[5]}""", "special \"pad\" must be 0")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":0,"bos":1,"eos":2,"unk":3}}""", "missing \"gpt2_ids\"")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":0,"bos":1,"eos":2,"unk":3},"gpt2_ids":[5, 50257]}""", "gpt2_ids[1] = 50257")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":0,"bos":1,"eos":2,"unk":3},"gpt2_ids":[5, "x"]}""", "gpt2_ids[1]")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":0,"bos":1,"eos":2,"unk":3},"gpt2_ids":[5, 7, 5]}""", "duplicate")]
    [InlineData("""{"kind":"gpt2-subset","specials":{"pad":0,"bos":1,"eos":2,"unk":3},"fallback":"bytes","gpt2_ids":[5]}""", "\"fallback\" is \"bytes\"")]
    public void MalformedFileIsRejectedNamingTheProblem(string json, string expect)
    {
        string p = Path.Combine(dir, "bad.json");
        File.WriteAllText(p, json);
        var e = Assert.Throws<InvalidDataException>(() => SubwordTokenizer.Load(p));
        Assert.Contains(expect, e.Message);
    }
}
