using System.CommandLine;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>eval, generate and merge: commands that use a trained model.</summary>
public static class ModelCommands
{
    static readonly Option<string> ModelDir = new("--model") { Description = "checkpoint directory", DefaultValueFactory = _ => "models/base-tiny" };
    static readonly Option<string?> AdapterDir = new("--adapter") { Description = "a PEFT-format LoRA adapter directory to apply" };
    static readonly Option<int> NoRepeatNgram = new Option<int>("--no-repeat-ngram") { Description = "never repeat an n-gram of this size in an output (0: off), as Hugging Face's no_repeat_ngram_size", DefaultValueFactory = _ => 0 }.Range(0, 64);

    /// <summary>Bounded so a beam's memory (beam × decode batch × cache) cannot grow without limit (beam 10000 reached 24 GB).</summary>
    const int MaxBeam = 64;

    /// <summary>Loads a checkpoint and, if given, an adapter on top of it (active).</summary>
    static (Seq2SeqTransformer, ISeq2SeqTokenizer) Load(ParseResult r, Option<string?> device)
    {
        var dev = Workflows.ResolveDevice(r.GetValue(device));
        var (model, tokenizer) = Checkpoint.Load(r.GetValue(ModelDir)!, dev);
        if (r.GetValue(AdapterDir) is string adapter)
        {
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, adapter, "default");
            lora.SetActiveAdapter("default");
        }
        return (model, tokenizer);
    }

    public static Command Eval(Option<string?> device)
    {
        var task = new Option<string>("--task") { DefaultValueFactory = _ => "debian" };
        var split = new Option<string>("--split") { DefaultValueFactory = _ => "test" };
        var limit = new Option<int>("--limit") { Description = "evaluate this many examples, spread over the split (0: all)", DefaultValueFactory = _ => 0 }.Range(0);
        var beam = new Option<int>("--beam") { DefaultValueFactory = _ => 1 }.Range(1, MaxBeam);
        var predictions = new Option<string?>("--predictions") { Description = "write predictions here, one a line" };
        var cmd = new Command("eval", "Score a model (optionally with an adapter) on a task split: ROUGE, or chrF and BLEU for a translation task.") { ModelDir, AdapterDir, task, split, limit, beam, NoRepeatNgram, predictions };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer) = Load(r, device);
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            var examples = r.GetValue(split) switch { "train" => data.Train, "validation" => data.Validation, "test" => data.Test, var s => throw new ArgumentException($"Unknown split '{s}'.") };
            examples = TaskData.Spread(examples, r.GetValue(limit));
            var result = Workflows.Evaluate(model, tokenizer, data.Name, examples, Workflows.DecodeFor(data.Name, r.GetValue(beam), r.GetValue(NoRepeatNgram)), "evaluating");
            if (r.GetValue(predictions) is string path) AtomicFile.WriteAllText(path, string.Join('\n', result.Predictions) + "\n");
            if (TaskData.IsTranslation(data.Name)) WriteTranslationScores(result, examples);
            else WriteRougeScores(result, examples);
            AnsiConsole.MarkupLine($"{examples.Count:N0} {Markup.Escape(r.GetValue(split)!)} examples, {(r.GetValue(beam) > 1 ? $"beam {r.GetValue(beam)}" : "greedy")}{(r.GetValue(NoRepeatNgram) > 0 ? $", no repeated {r.GetValue(NoRepeatNgram)}-grams" : "")}");
            return 0;
        }));
        return cmd;
    }

    static void WriteRougeScores(EvalResult result, IReadOnlyList<Example> examples)
    {
        // The lead-8 baseline (the source's first 8 words) on the same examples: the bar a summarizer must clear.
        var lead = Evaluator.LeadBaseline(examples).Rouge;
        var table = new Table().AddColumns("metric", "precision", "recall", "F", "lead-8 F");
        foreach (var (name, s, l) in new[] { ("ROUGE-1", result.Rouge.Rouge1, lead.Rouge1), ("ROUGE-2", result.Rouge.Rouge2, lead.Rouge2), ("ROUGE-L", result.Rouge.RougeL, lead.RougeL), ("ROUGE-Lsum", result.Rouge.RougeLsum, lead.RougeLsum) })
            table.AddRow(name, s.Precision.ToString("F4"), s.Recall.ToString("F4"), s.F.ToString("F4"), l.F.ToString("F4"));
        AnsiConsole.Write(table);
    }

    /// <summary>
    /// sacrebleu's corpus chrF2, chrF2++ and BLEU, and the uncased variants (not sacrebleu's default), beside the
    /// copy-the-source baseline: the English synopsis left untranslated, the bar a translator must clear.
    /// </summary>
    static void WriteTranslationScores(EvalResult result, IReadOnlyList<Example> examples)
    {
        var model = TranslationScores.Compute(result.Predictions, result.References);
        var copy = TranslationScores.Compute(examples.Select(e => e.Source).ToList(), result.References);
        var table = new Table().AddColumns("metric", "model", "copy source");
        foreach (var (name, m, c) in new[]
        {
            ("chrF2", model.Chrf, copy.Chrf), ("chrF2++", model.ChrfPlusPlus, copy.ChrfPlusPlus), ("BLEU", model.Bleu, copy.Bleu),
            ("chrF2 uncased", model.ChrfUncased, copy.ChrfUncased), ("BLEU uncased", model.BleuUncased, copy.BleuUncased),
        })
            table.AddRow(name, m.ToString("F2"), c.ToString("F2"));
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine("[grey]uncased: both sides lower-cased, accents stripped (not sacrebleu's default)[/]");
    }

    public static Command Generate(Option<string?> device)
    {
        var text = new Option<string[]>("--text") { Description = "source text(s); default: read lines from stdin", AllowMultipleArgumentsPerToken = true };
        var beam = new Option<int>("--beam") { DefaultValueFactory = _ => 1 }.Range(1, MaxBeam);
        var maxLen = new Option<int>("--max-length") { DefaultValueFactory = _ => 24 }.Range(1, 4096);
        var noCache = new Option<bool>("--no-cache") { Description = "recompute the whole prefix each step (for comparison)" };
        var cmd = new Command("generate", "Generate a target (e.g. a synopsis) for each source text.") { ModelDir, AdapterDir, text, beam, maxLen, noCache, NoRepeatNgram };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer) = Load(r, device);
            using var _ = model;
            var sources = r.GetValue(text) is { Length: > 0 } t ? t : ReadStdin();
            foreach (var source in sources)
            {
                var ids = tokenizer.EncodeSource(source, 96);   // as in training and eval
                var output = SequenceDecoder.Generate(model, ids, 1, ids.Length, new DecodeOptions(r.GetValue(maxLen), r.GetValue(beam), 1f, !r.GetValue(noCache), r.GetValue(NoRepeatNgram)));
                Console.WriteLine(tokenizer.Decode(output[0]));
            }
            return 0;
        }));
        return cmd;
    }

    static string[] ReadStdin()
    {
        var lines = new List<string>();
        while (Console.ReadLine() is { } line) if (!string.IsNullOrWhiteSpace(line)) lines.Add(line);
        return lines.ToArray();
    }

    public static Command Merge(Option<string?> device)
    {
        var output = new Option<string>("--out") { Description = "directory for the merged checkpoint", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace what --out already holds" };
        var cmd = new Command("merge", "Fold a LoRA adapter into the base weights (W += B·A·scaling) and save a plain checkpoint.") { ModelDir, AdapterDir, output, overwrite };
        cmd.SetAction(r => Program.Guard(() =>
        {
            if (r.GetValue(AdapterDir) == null) throw new ArgumentException("merge needs --adapter DIR.");
            if (Path.GetFullPath(r.GetValue(output)!) == Path.GetFullPath(r.GetValue(ModelDir)!))
                throw new ArgumentException($"merge: --out '{r.GetValue(output)}' is the --model folder; the merged model would replace its base. Choose another --out.");
            RunFolders.RequireFresh(r.GetValue(output)!, r.GetValue(overwrite), "merge");
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var (model, tokenizer) = Checkpoint.Load(r.GetValue(ModelDir)!, dev);
            using var _ = model;
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, r.GetValue(AdapterDir)!, "default");
            lora.SetActiveAdapter("default");
            lora.MergeAndUnload();
            Checkpoint.Save(r.GetValue(output)!, model, tokenizer);
            AnsiConsole.MarkupLine($"merged adapter into {model.ParameterCount():N0} parameters → {Markup.Escape(r.GetValue(output)!)}");
            return 0;
        }));
        return cmd;
    }
}
