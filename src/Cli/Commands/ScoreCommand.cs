using System.CommandLine;
using System.Text.Json;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>score: one metric of a hypotheses file against a references file (ROUGE, or sacrebleu's chrF, chrF++ and BLEU).</summary>
public static class ScoreCommand
{
    static readonly string[] Metrics = ["rouge", "chrf", "chrf++", "bleu"];

    // Names such as "chrF2++" print as written, not as "chrF2\u002B\u002B" (the default encoder escapes '+' for HTML).
    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The <c>score</c> command: ROUGE, or corpus chrF / chrF++ / BLEU, of a hypotheses file against a references file.</summary>
    public static Command Create()
    {
        var hypotheses = new Argument<string>("hypotheses") { Description = "text file, one hypothesis (prediction) a line" };
        var references = new Argument<string>("references") { Description = "text file, one reference a line" };
        var metric = new Option<string>("--metric") { Description = "rouge, chrf, chrf++ or bleu (chrF/BLEU: corpus-level, as sacrebleu)", DefaultValueFactory = _ => "rouge" }
            .AcceptOnlyFromAmong(Metrics);
        var json = new Option<bool>("--json") { Description = "print JSON: rouge as the rouge command; chrf/bleu as {\"name\":...,\"score\":...} (BLEU adds its counts)" };
        var stem = new Option<bool>("--stem") { Description = "rouge: Porter-stem tokens (rouge_score's use_stemmer)" };
        var uncased = new Option<bool>("--uncased") { Description = "chrf/bleu: lower-case and strip accents on both sides first (NOT sacrebleu's default; for uncased vocabularies)" };
        var cmd = new Command("score", "Score hypotheses against references: ROUGE averaged over lines, or corpus chrF / chrF++ / BLEU computed as sacrebleu does.")
            { hypotheses, references, metric, json, stem, uncased };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var hyps = InfoCommands.ReadLines(r.GetValue(hypotheses)!, "hypotheses");
            var refs = InfoCommands.ReadLines(r.GetValue(references)!, "references");
            if (hyps.Length != refs.Length) throw new ArgumentException($"{hyps.Length} hypotheses but {refs.Length} references: the files must have one example a line each.");
            if (hyps.Length == 0) throw new ArgumentException("the files are empty: nothing to score.");
            string m = r.GetValue(metric)!;
            bool isUncased = r.GetValue(uncased);
            if (isUncased && m == "rouge") throw new ArgumentException("--uncased is for chrf and bleu (ROUGE lower-cases anyway).");
            if (r.GetValue(stem) && m != "rouge") throw new ArgumentException("--stem is for --metric rouge.");
            if (m == "rouge") { InfoCommands.WriteRouge(Rouge.Average(hyps, refs, r.GetValue(stem)), r.GetValue(json)); return 0; }
            string suffix = isUncased ? " (uncased)" : "";
            if (m == "bleu")
            {
                var b = isUncased ? UncasedScoring.Bleu(hyps, refs) : Bleu.Corpus(hyps, refs);
                if (r.GetValue(json))
                    Console.WriteLine(JsonSerializer.Serialize(new
                    {
                        name = "BLEU" + suffix, score = b.Score, counts = b.Counts, totals = b.Totals, precisions = b.Precisions,
                        bp = b.BrevityPenalty, sys_len = b.SysLen, ref_len = b.RefLen,
                    }, Json));
                else
                    // sacrebleu's own one-line summary, so the two can be compared by eye.
                    Console.WriteLine($"BLEU{suffix} = {b.Score:F2} {string.Join('/', b.Precisions.Select(p => p.ToString("F1")))} " +
                        $"(BP = {b.BrevityPenalty:F3} ratio = {(b.RefLen > 0 ? (double)b.SysLen / b.RefLen : 0):F3} hyp_len = {b.SysLen} ref_len = {b.RefLen})");
                return 0;
            }
            var options = m == "chrf++" ? ChrfOptions.PlusPlus : ChrfOptions.Default;
            double score = isUncased ? UncasedScoring.Chrf(hyps, refs, options) : Chrf.Corpus(hyps, refs, options);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { name = options.Name + suffix, score }, Json));
            else Console.WriteLine($"{options.Name}{suffix} = {score:F2}");
            return 0;
        }));
        return cmd;
    }
}
