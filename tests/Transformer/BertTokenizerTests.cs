using System.Globalization;
using System.Text;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>The WordPiece tokenizer against a plain re-statement of Hugging Face's BertTokenizer (BasicTokenizer + WordpieceTokenizer).</summary>
public class BertTokenizerTests(MiniLmFixture mini) : IClassFixture<MiniLmFixture>
{
    /// <summary>HF's BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None) then greedy longest-match WordPiece.</summary>
    sealed class ReferenceWordPiece(string vocabText)
    {
        readonly Dictionary<string, int> _vocab = vocabText.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0)
            .Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i);

        static bool IsPunctuation(int c) =>
            c is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126 ||
            CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
                or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
                or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

        static bool IsCjk(int c) => c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
            or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;

        static bool IsWhitespace(int c) => c is ' ' or '\t' or '\n' or '\r' || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.SpaceSeparator;

        static bool IsControl(int c) => c is not ('\t' or '\n' or '\r') &&
            CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.Format;

        public List<int> Encode(string text)
        {
            var cleaned = new StringBuilder();
            foreach (var rune in text.EnumerateRunes())
            {
                int c = rune.Value;
                if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
                if (IsWhitespace(c)) cleaned.Append(' ');
                else if (IsCjk(c)) cleaned.Append(' ').Append(rune.ToString()).Append(' ');
                else cleaned.Append(rune.ToString());
            }
            var words = new List<string>();
            foreach (var token in cleaned.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var lowered = token.ToLowerInvariant().Normalize(NormalizationForm.FormD);
                var stripped = new StringBuilder();
                foreach (var ch in lowered) if (CharUnicodeInfo.GetUnicodeCategory(ch) != UnicodeCategory.NonSpacingMark) stripped.Append(ch);
                var current = new StringBuilder();
                foreach (var rune in stripped.ToString().EnumerateRunes())
                {
                    if (IsPunctuation(rune.Value))
                    {
                        if (current.Length > 0) { words.Add(current.ToString()); current.Clear(); }
                        words.Add(rune.ToString());
                    }
                    else current.Append(rune.ToString());
                }
                if (current.Length > 0) words.Add(current.ToString());
            }
            var ids = new List<int> { _vocab["[CLS]"] };
            foreach (var word in words) ids.AddRange(WordPiece(word));
            ids.Add(_vocab["[SEP]"]);
            return ids;
        }

        IEnumerable<int> WordPiece(string word)
        {
            if (word.EnumerateRunes().Count() > 100) return [_vocab["[UNK]"]];
            var pieces = new List<int>();
            int start = 0;
            while (start < word.Length)
            {
                int end = word.Length, found = -1;
                while (start < end)
                {
                    var piece = (start > 0 ? "##" : "") + word[start..end];
                    if (_vocab.TryGetValue(piece, out found)) break;
                    found = -1;
                    end--;
                }
                if (found < 0) return [_vocab["[UNK]"]];
                pieces.Add(found);
                start = end;
            }
            return pieces;
        }
    }

    [Fact]
    public void Known_ids_of_a_sentence()
    {
        // As Hugging Face's tokenizer for sentence-transformers/all-MiniLM-L6-v2 gives them.
        Assert.Equal([101, 7592, 2088, 102], mini.Tokenizer.Encode("Hello world"));
        Assert.Equal([101, 7592, 1010, 2088, 999, 102], mini.Tokenizer.Encode("HELLO, wörld!"));   // lower-cased, accent stripped
        // Symbols are BERT punctuation (Microsoft.ML.Tokenizers' BertTokenizer deletes them), and \n separates words.
        var vocab = mini.Tokenizer.VocabText.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        Assert.Equal(new[] { "[CLS]", "`", "the", "`", "$", "hello", "world", "[SEP]" },
            mini.Tokenizer.Encode("`the` $hello\nworld").Select(id => vocab[id]));
    }

    [Fact]
    public void Matches_the_reference_on_real_texts_and_truncates_to_256()
    {
        var reference = new ReferenceWordPiece(mini.Tokenizer.VocabText);
        var texts = JsonlDataset.Load(DataPaths.Find("debian-descriptions.jsonl.gz"), "validation", 800).SelectMany(e => new[] { e.Source, e.Target })
            .Concat(JsonlDataset.Load(DataPaths.Find("manpage-synopses.jsonl.gz"), "test", 200).Select(e => e.Source)).ToList();
        int truncated = 0;
        foreach (var text in texts)
        {
            var expected = reference.Encode(text);
            if (expected.Count > 256) { expected = [.. expected.Take(255), expected[^1]]; truncated++; }
            var actual = mini.Tokenizer.Encode(text);
            int at = Enumerable.Range(0, Math.Min(expected.Count, actual.Length)).FirstOrDefault(i => expected[i] != actual[i], -1);
            Assert.True(at < 0 && expected.Count == actual.Length,
                $"'{text[..Math.Min(80, text.Length)]}…': first difference at {at} (reference {string.Join(" ", expected.Skip(Math.Max(0, at - 2)).Take(5))}, ours {string.Join(" ", actual.Skip(Math.Max(0, at - 2)).Take(5))}), lengths {expected.Count} vs {actual.Length}");
        }
        Assert.True(truncated > 0, "no text was long enough to test truncation");
    }
}
