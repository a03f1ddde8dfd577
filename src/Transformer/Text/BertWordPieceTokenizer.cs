using Microsoft.ML.Tokenizers;

namespace Nanolora.Transformer;

/// <summary>
/// Hugging Face's BertTokenizer behaviour over a WordPiece vocab.txt, through Microsoft.ML.Tokenizers' BertTokenizer:
/// basic tokenization (punctuation split, CJK characters apart), lower-casing with accents stripped when
/// <c>do_lower_case</c> (as HF's <c>strip_accents=None</c> implies), then <c>[CLS] pieces [SEP]</c>, truncated to
/// <see cref="MaxLength"/> ids in all (sentence-transformers' max_seq_length: 256 for all-MiniLM-L6-v2).
/// </summary>
public sealed class BertWordPieceTokenizer
{
    readonly BertTokenizer _tokenizer;

    public string VocabText { get; }
    public bool LowerCase { get; }
    public int MaxLength { get; }
    public int VocabSize { get; }
    public int PadId => _tokenizer.PaddingTokenId;
    public int ClsId => _tokenizer.ClassificationTokenId;
    public int SepId => _tokenizer.SeparatorTokenId;

    public BertWordPieceTokenizer(string vocabText, bool lowerCase = true, int maxLength = 256, string source = "vocab.txt")
    {
        if (maxLength < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), $"Max length {maxLength} leaves no room for [CLS] and [SEP].");
        VocabText = vocabText;
        LowerCase = lowerCase;
        MaxLength = maxLength;
        VocabSize = vocabText.Split('\n').Count(l => l.TrimEnd('\r').Length > 0);
        foreach (var special in new[] { "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]" })
            if (!vocabText.Split('\n').Any(l => l.TrimEnd('\r') == special))
                throw new InvalidDataException($"{source}: the vocabulary has no {special} token; is it a BERT WordPiece vocab.txt?");
        using var stream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(vocabText));
        _tokenizer = BertTokenizer.Create(stream, new BertOptions
        {
            LowerCaseBeforeTokenization = lowerCase,
            RemoveNonSpacingMarks = lowerCase,
            ApplyBasicTokenization = true,
            IndividuallyTokenizeCjk = true,
            SplitOnSpecialTokens = true,
        });
    }

    /// <summary>[CLS] word pieces [SEP], the pieces cut so the whole fits in <paramref name="maxLength"/> (default <see cref="MaxLength"/>).</summary>
    public int[] Encode(string text, int? maxLength = null)
    {
        int max = Math.Min(maxLength ?? MaxLength, MaxLength);
        if (max < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), $"Max length {max} leaves no room for [CLS] and [SEP].");
        var pieces = _tokenizer.EncodeToIds(text, addSpecialTokens: false);
        int keep = Math.Min(pieces.Count, max - 2);
        var ids = new int[keep + 2];
        ids[0] = ClsId;
        for (int i = 0; i < keep; i++) ids[i + 1] = pieces[i];
        ids[^1] = SepId;
        return ids;
    }

    /// <summary>A padded batch of encoded texts.</summary>
    public EncoderBatch EncodeBatch(IReadOnlyList<string> texts, int? maxLength = null) =>
        EncoderBatch.Pad(texts.Select(t => (IReadOnlyList<int>)Encode(t, maxLength)).ToList(), PadId);
}
