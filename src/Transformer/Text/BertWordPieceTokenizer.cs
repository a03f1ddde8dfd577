using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Nanolora.Transformer;

/// <summary>
/// Hugging Face's BertTokenizer over a WordPiece vocab.txt: basic tokenization (control characters dropped, every
/// whitespace a separator, CJK characters apart, lower-casing with accents stripped when <c>do_lower_case</c>, as HF's
/// <c>strip_accents=None</c> implies, punctuation split off), then Microsoft.ML.Tokenizers' WordPiece on each word,
/// then <c>[CLS] pieces [SEP]</c> truncated to <see cref="MaxLength"/> ids in all (sentence-transformers'
/// max_seq_length: 256 for all-MiniLM-L6-v2).
/// The basic step is ours because Microsoft.ML.Tokenizers 2.0.1's BertTokenizer departs from BERT there: it deletes
/// symbol characters such as $ + = &lt; &gt; ^ ` | ~ (dotnet/machinelearning#7725) and joins words separated only by
/// \n, \t or \r (#7724), which changes the ids of real Debian descriptions.
/// </summary>
public sealed class BertWordPieceTokenizer
{
    readonly WordPieceTokenizer _wordPiece;
    readonly Dictionary<string, int> _vocab;
    readonly Dictionary<string, int> _specialIds = new(StringComparer.Ordinal);
    static readonly System.Text.RegularExpressions.Regex SpecialTokenPattern = new(@"(\[CLS\]|\[SEP\]|\[PAD\]|\[UNK\]|\[MASK\])");

    /// <summary>The vocab.txt text, one token per line (line number = id).</summary>
    public string VocabText { get; }
    /// <summary>Whether text is lower-cased and stripped of accents first (<c>do_lower_case</c>).</summary>
    public bool LowerCase { get; }
    /// <summary>The most ids an encoding has, [CLS] and [SEP] included.</summary>
    public int MaxLength { get; }
    /// <summary>Number of tokens in the vocabulary.</summary>
    public int VocabSize => _vocab.Count;
    /// <summary>The id of [PAD].</summary>
    public int PadId { get; }
    /// <summary>The id of [CLS].</summary>
    public int ClsId { get; }
    /// <summary>The id of [SEP].</summary>
    public int SepId { get; }

    /// <summary>Builds the tokenizer over a vocab.txt.</summary>
    /// <param name="vocabText">The vocab.txt text, one token per line.</param>
    /// <param name="lowerCase">Lower-case and strip accents (uncased models such as all-MiniLM-L6-v2).</param>
    /// <param name="maxLength">The most ids per encoding, [CLS] and [SEP] included.</param>
    /// <param name="source">Names the vocabulary in errors.</param>
    public BertWordPieceTokenizer(string vocabText, bool lowerCase = true, int maxLength = 256, string source = "vocab.txt")
    {
        if (maxLength < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), $"Max length {maxLength} leaves no room for [CLS] and [SEP].");
        VocabText = vocabText;
        LowerCase = lowerCase;
        MaxLength = maxLength;
        _vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var line in vocabText.Split('\n'))
        {
            var token = line.TrimEnd('\r');
            if (token.Length > 0) _vocab.TryAdd(token, _vocab.Count);
        }
        int Special(string token) => _vocab.TryGetValue(token, out int id) ? id
            : throw new InvalidDataException($"{source}: the vocabulary has no {token} token; is it a BERT WordPiece vocab.txt?");
        (PadId, ClsId, SepId) = (Special("[PAD]"), Special("[CLS]"), Special("[SEP]"));
        foreach (var token in new[] { "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]" }) _specialIds[token] = Special(token);
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(vocabText));
        // Words arrive already split and normalized, so WordPiece runs with no pre-tokenizer or normalizer of its own.
        _wordPiece = WordPieceTokenizer.Create(stream, new WordPieceOptions { PreTokenizer = null, Normalizer = null, UnknownToken = "[UNK]" });
    }

    /// <summary>[CLS] word pieces [SEP], the pieces cut so the whole fits in <paramref name="maxLength"/> (default <see cref="MaxLength"/>).</summary>
    public int[] Encode(string text, int? maxLength = null)
    {
        int max = Math.Min(maxLength ?? MaxLength, MaxLength);
        if (max < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), $"Max length {max} leaves no room for [CLS] and [SEP].");
        var ids = new List<int> { ClsId };
        // Special tokens written in the text are kept whole, as Hugging Face's tokenizers do (never_split / added tokens).
        foreach (var part in SpecialTokenPattern.Split(text))
        {
            if (ids.Count > max - 2) break;
            if (_specialIds.TryGetValue(part, out int special)) { ids.Add(special); continue; }
            foreach (var word in BasicTokens(part))
            {
                if (ids.Count > max - 2) break;
                ids.AddRange(_wordPiece.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
            }
        }
        if (ids.Count > max - 1) ids.RemoveRange(max - 1, ids.Count - (max - 1));
        ids.Add(SepId);
        return ids.ToArray();
    }

    /// <summary>HF's BasicTokenizer: the words (and lone punctuation marks) WordPiece then splits.</summary>
    IEnumerable<string> BasicTokens(string text)
    {
        var cleaned = new StringBuilder(text.Length + 8);
        foreach (var rune in text.EnumerateRunes())
        {
            int c = rune.Value;
            // HF's _is_control: every "C*" category (control, format, surrogate, private use, unassigned) but \t \n \r.
            bool control = c is not ('\t' or '\n' or '\r') && Rune.GetUnicodeCategory(rune) is UnicodeCategory.Control or UnicodeCategory.Format
                or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
            if (c is 0 or 0xFFFD || control) continue;
            if (Rune.IsWhiteSpace(rune)) cleaned.Append(' ');
            else if (IsCjk(c)) cleaned.Append(' ').Append(rune.ToString()).Append(' ');
            else cleaned.Append(rune.ToString());
        }
        foreach (var token in cleaned.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var word = LowerCase ? StripAccents(token.ToLowerInvariant()) : token;
            var current = new StringBuilder();
            foreach (var rune in word.EnumerateRunes())
            {
                if (!IsPunctuation(rune)) { current.Append(rune.ToString()); continue; }
                if (current.Length > 0) { yield return current.ToString(); current.Clear(); }
                yield return rune.ToString();
            }
            if (current.Length > 0) yield return current.ToString();
        }
    }

    /// <summary>NFD, then drop the combining marks (é → e). Needs ICU: the build does not use invariant globalization.</summary>
    internal static string StripAccents(string s)
    {
        if (Ascii.IsValid(s)) return s;
        var decomposed = s.Normalize(NormalizationForm.FormD);
        var sb = new StringBuilder(decomposed.Length);
        foreach (char ch in decomposed) if (CharUnicodeInfo.GetUnicodeCategory(ch) != UnicodeCategory.NonSpacingMark) sb.Append(ch);
        return sb.ToString();
    }

    /// <summary>BERT counts every non-alphanumeric printable ASCII character as punctuation, plus Unicode's P* categories.</summary>
    static bool IsPunctuation(Rune r) =>
        r.Value is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126 ||
        Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
            or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    /// <summary>The CJK Unified Ideograph blocks BERT puts spaces around.</summary>
    static bool IsCjk(int c) => c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
        or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;

    /// <summary>A padded batch of encoded texts.</summary>
    public EncoderBatch EncodeBatch(IReadOnlyList<string> texts, int? maxLength = null) =>
        EncoderBatch.Pad(texts.Select(t => (IReadOnlyList<int>)Encode(t, maxLength)).ToList(), PadId);
}
