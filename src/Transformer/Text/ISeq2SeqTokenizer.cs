using System.Text.Json;
using System.Text.Json.Nodes;

namespace Nanolora.Transformer;

/// <summary>
/// What the seq2seq model needs of a tokenizer. Ids 0–3 are always pad, bos, eos and unk
/// (<see cref="SubwordTokenizer.Pad"/> …), so the model, the batches and the decoder agree on them whatever the vocabulary.
/// </summary>
public interface ISeq2SeqTokenizer
{
    /// <summary>Rows of the model's embedding table.</summary>
    int VocabSize { get; }

    /// <summary>
    /// A source as the encoder reads it: the text's ids ending with Eos, with whatever framing the encoder was
    /// pretrained with, at most <paramref name="maxTokens"/> ids in all (the text is cut, Eos is kept).
    /// </summary>
    int[] EncodeSource(string text, int maxTokens);

    /// <summary>A target's ids with no specials, at most <paramref name="maxTokens"/> (the batch adds Bos and Eos).</summary>
    int[] EncodeTarget(string text, int maxTokens);

    /// <summary>Text of ids: specials are skipped and decoding stops at the first Eos.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>Writes the tokenizer.json that <see cref="Seq2SeqTokenizers.Load"/> reads back (atomically).</summary>
    void Save(string path);
}

/// <summary>Reads a tokenizer.json of either kind: GPT-2 subwords ("gpt2-subset") or BERT WordPiece ("bert-wordpiece").</summary>
public static class Seq2SeqTokenizers
{
    /// <summary>Reads a tokenizer.json, choosing the kind by its "kind" field (none: GPT-2 subwords).</summary>
    public static ISeq2SeqTokenizer Load(string path)
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"tokenizer file '{path}': is a directory, expected a tokenizer.json file");
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file '{path}' does not exist", path);
        string? kind;
        try { kind = JsonNode.Parse(File.ReadAllText(path)) is JsonObject o && o["kind"] is JsonValue v && v.TryGetValue(out string? s) ? s : null; }
        catch (JsonException e) { throw new InvalidDataException($"tokenizer file '{path}': not valid JSON ({e.Message})"); }
        return kind == WordPieceSeq2SeqTokenizer.Kind ? WordPieceSeq2SeqTokenizer.Load(path) : SubwordTokenizer.Load(path);
    }
}
