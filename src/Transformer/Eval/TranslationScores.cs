namespace Nanolora.Transformer;

/// <summary>
/// What a translation task reports (0–100, corpus-level): sacrebleu's chrF2, chrF2++ and BLEU on the text as it
/// is, and chrF2 and BLEU after <see cref="UncasedScoring"/>'s lower-casing and accent stripping (not sacrebleu's
/// default: for models whose vocabulary cannot write case or accents).
/// </summary>
public sealed record TranslationScores(double Chrf, double ChrfPlusPlus, double Bleu, double ChrfUncased, double BleuUncased)
{
    /// <summary>Corpus-level scores of the predictions against the references (one reference per prediction, same order).</summary>
    public static TranslationScores Compute(IReadOnlyList<string> predictions, IReadOnlyList<string> references) => new(
        Chrf: Nanolora.Transformer.Chrf.Corpus(predictions, references),
        ChrfPlusPlus: Nanolora.Transformer.Chrf.Corpus(predictions, references, ChrfOptions.PlusPlus),
        Bleu: Nanolora.Transformer.Bleu.Corpus(predictions, references).Score,
        ChrfUncased: UncasedScoring.Chrf(predictions, references),
        BleuUncased: UncasedScoring.Bleu(predictions, references).Score);
}
