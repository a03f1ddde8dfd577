namespace Nanolora.Transformer;

/// <summary>
/// chrF and BLEU after lower-casing and accent stripping both sides — NOT sacrebleu's default, and not comparable
/// with published chrF/BLEU. An uncased WordPiece model (all-MiniLM-L6-v2's vocabulary lower-cases and strips
/// accents) can never write "Bibliothek" or "éditeur", so sacrebleu's cased scores charge it for what it cannot
/// produce; these say how close its text is otherwise. The normalization is the BERT tokenizer's own
/// (<see cref="BertWordPieceTokenizer"/>: invariant lower-casing, NFD, combining marks dropped), so a prediction
/// such a model writes is already normalized and only the references change.
/// </summary>
public static class UncasedScoring
{
    /// <summary>"Übersetzungswerkzeug für Éditeur" → "ubersetzungswerkzeug fur editeur" (ß and other letters without a decomposition stay).</summary>
    public static string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return BertWordPieceTokenizer.StripAccents(text.ToLowerInvariant());
    }

    /// <summary>Corpus chrF of the normalized hypotheses against the normalized references.</summary>
    public static double Chrf(IReadOnlyList<string> hypotheses, IReadOnlyList<string> references, ChrfOptions? options = null) =>
        Nanolora.Transformer.Chrf.Corpus(Normalized(hypotheses), Normalized(references), options);

    /// <summary>Corpus BLEU of the normalized hypotheses against the normalized references.</summary>
    public static BleuScore Bleu(IReadOnlyList<string> hypotheses, IReadOnlyList<string> references, BleuOptions? options = null) =>
        Nanolora.Transformer.Bleu.Corpus(Normalized(hypotheses), Normalized(references), options);

    static List<string> Normalized(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return texts.Select(Normalize).ToList();
    }
}
