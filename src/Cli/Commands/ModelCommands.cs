using System.CommandLine;
using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>eval, generate and merge: commands that use a trained model.</summary>
public static class ModelCommands
{
    static readonly Option<string> ModelDir = SharedOptions.Model();
    static readonly Option<string?> AdapterDir = new("--adapter") { Description = "a PEFT-format LoRA adapter directory to apply (adapter_config.json + adapter_model.safetensors)" };
    static readonly Option<bool> Force = new("--force") { Description = "apply --adapter even to a base other than the one it was trained on (its recorded fingerprint differs)" };
    static readonly Option<int> NoRepeatNgram = new Option<int>("--no-repeat-ngram") { Description = "never repeat an n-gram of this many tokens in an output (0: off), as Hugging Face's no_repeat_ngram_size", DefaultValueFactory = _ => 0 }.Range(0, 64);

    /// <summary>Bounded so a beam's memory (beam × decode batch × cache) cannot grow without limit (beam 10000 reached 24 GB).</summary>
    const int MaxBeam = 64;

    /// <summary>Loads a checkpoint and, if given, an adapter on top of it (active).</summary>
    static (Seq2SeqTransformer, ISeq2SeqTokenizer) Load(ParseResult r, Option<string?> device)
    {
        var dev = Workflows.ResolveDevice(r.GetValue(device));
        var (model, tokenizer) = Checkpoint.Load(ShippedPaths.Resolve(r.GetValue(ModelDir)!), dev);
        if (r.GetValue(AdapterDir) is string adapter)
        {
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, adapter, "default", r.GetValue(Force), Terminal.Status);
            lora.SetActiveAdapter("default");
        }
        return (model, tokenizer);
    }

    /// <summary>The <c>eval</c> command: scores a model (optionally with an adapter) on a task split.</summary>
    public static Command Eval(Option<string?> device)
    {
        var task = SharedOptions.Task();
        var split = new Option<string>("--split") { Description = "which split of the task to score", DefaultValueFactory = _ => "test" }
            .Choices("train", "validation", "test");
        var limit = new Option<int>("--limit") { Description = "evaluate this many examples, spread evenly over the split (0: all)", DefaultValueFactory = _ => 0 }.Range(0);
        var beam = new Option<int>("--beam") { Description = $"beam width (1: greedy decoding; at most {MaxBeam})", DefaultValueFactory = _ => 1 }.Range(1, MaxBeam);
        var predictions = new Option<string?>("--predictions") { Description = "write the predictions to this file, one a line, in split order" };
        var json = JsonOutput.Option("nanolora.eval/1");
        var cmd = new Command("eval", "Score a model (optionally with an adapter) on a task split: ROUGE beside the lead-8 baseline, or chrF and BLEU beside copying the source for a translation task.")
            { ModelDir, AdapterDir, Force, task, split, limit, beam, NoRepeatNgram, predictions, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer) = Load(r, device);
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            var examples = r.GetValue(split) switch { "train" => data.Train, "validation" => data.Validation, "test" => data.Test, var s => throw new ArgumentException($"Unknown split '{s}'; expected train, validation or test.") };
            examples = TaskData.Spread(examples, r.GetValue(limit));
            var result = Workflows.Evaluate(model, tokenizer, data.Name, examples, Workflows.DecodeFor(data.Name, r.GetValue(beam), r.GetValue(NoRepeatNgram)), "evaluating");
            if (r.GetValue(predictions) is string path) AtomicFile.WriteAllText(path, string.Join('\n', result.Predictions) + "\n");
            var summary = $"{examples.Count:N0} {r.GetValue(split)} examples, {(r.GetValue(beam) > 1 ? $"beam {r.GetValue(beam)}" : "greedy")}{(r.GetValue(NoRepeatNgram) > 0 ? $", no repeated {r.GetValue(NoRepeatNgram)}-grams" : "")}";
            if (TaskData.IsTranslation(data.Name))
            {
                WriteTranslationScores(result, examples, r.GetValue(json), r.GetValue(ModelDir)!, r.GetValue(AdapterDir), data.Name, r.GetValue(split)!);
                if (!r.GetValue(json)) Console.WriteLine(summary);
                return 0;
            }
            // The lead-8 baseline (the source's first 8 words) on the same examples: the bar a summarizer must clear.
            var lead = Evaluator.LeadBaseline(examples).Rouge;
            if (r.GetValue(json))
            {
                var decode = Workflows.DecodeFor(data.Name, r.GetValue(beam), r.GetValue(NoRepeatNgram));
                JsonOutput.Write(new EvalJson("nanolora.eval/1", r.GetValue(ModelDir)!, r.GetValue(AdapterDir), data.Name, r.GetValue(split)!, examples.Count,
                    new DecodingJson(decode.BeamSize, decode.NoRepeatNgramSize, decode.MaxLength), JsonOutput.Rouge(result.Rouge), JsonOutput.Rouge(lead)));
                return 0;
            }
            var table = new TextTable(new TextColumn("metric"), new TextColumn("precision", true), new TextColumn("recall", true), new TextColumn("F", true), new TextColumn("lead-8 F", true));
            foreach (var (name, s, l) in new[] { ("ROUGE-1", result.Rouge.Rouge1, lead.Rouge1), ("ROUGE-2", result.Rouge.Rouge2, lead.Rouge2), ("ROUGE-L", result.Rouge.RougeL, lead.RougeL), ("ROUGE-Lsum", result.Rouge.RougeLsum, lead.RougeLsum) })
                table.AddRow(name, s.Precision.ToString("F4"), s.Recall.ToString("F4"), s.F.ToString("F4"), l.F.ToString("F4"));
            Terminal.Write(table);
            Console.WriteLine(summary);
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// sacrebleu's corpus chrF2, chrF2++ and BLEU, and the uncased variants (not sacrebleu's default), beside the
    /// copy-the-source baseline: the English synopsis left untranslated, the bar a translator must clear.
    /// </summary>
    static void WriteTranslationScores(EvalResult result, IReadOnlyList<Example> examples, bool json, string model, string? adapter, string task, string split)
    {
        var scores = TranslationScores.Compute(result.Predictions, result.References);
        var copy = TranslationScores.Compute(examples.Select(e => e.Source).ToList(), result.References);
        if (json)
        {
            JsonOutput.Write(new { schema = "nanolora.eval/1", model, adapter, task, split, examples = examples.Count, scores, copy_source = copy });
            return;
        }
        var table = new TextTable(new TextColumn("metric"), new TextColumn("model", true), new TextColumn("copy source", true));
        foreach (var (name, m, c) in new[]
        {
            ("chrF2", scores.Chrf, copy.Chrf), ("chrF2++", scores.ChrfPlusPlus, copy.ChrfPlusPlus), ("BLEU", scores.Bleu, copy.Bleu),
            ("chrF2 uncased", scores.ChrfUncased, copy.ChrfUncased), ("BLEU uncased", scores.BleuUncased, copy.BleuUncased),
        })
            table.AddRow(name, m.ToString("F2"), c.ToString("F2"));
        Terminal.Write(table);
        Console.WriteLine("uncased: both sides lower-cased, accents stripped (not sacrebleu's default)");
    }

    /// <summary>The <c>generate</c> command: one generated target a line for each source line.</summary>
    public static Command Generate(Option<string?> device)
    {
        var text = new Option<string[]>("--text") { Description = "source text(s); default: read lines from stdin (blank lines skipped)", AllowMultipleArgumentsPerToken = true };
        var beam = new Option<int>("--beam") { Description = $"beam width (1: greedy decoding; at most {MaxBeam})", DefaultValueFactory = _ => 1 }.Range(1, MaxBeam);
        var maxLen = new Option<int>("--max-length") { Description = "most tokens to generate per output", DefaultValueFactory = _ => 24 }.Range(1, 4096);
        var maxSource = new Option<int>("--max-source-length")
            { Description = "sources are cut to this many tokens, end-of-sequence included, as in training (a warning on stderr says when)", DefaultValueFactory = _ => Lengths.For("debian").Source }.Range(2, 4096);
        var noCache = new Option<bool>("--no-cache") { Description = "recompute the whole prefix each step (for comparison)" };
        var json = new Option<bool>("--json") { Description = "one JSON object a line on stdout per source (schema nanolora.generate/1, see docs/cli-json.md)" };
        var cmd = new Command("generate", "Generate a target (e.g. a synopsis) for each source text: one output a line on stdout.")
            { ModelDir, AdapterDir, Force, text, beam, maxLen, maxSource, noCache, NoRepeatNgram, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer) = Load(r, device);
            using var _ = model;
            var sources = r.GetValue(text) is { Length: > 0 } t ? t : ReadStdin();
            int limit = r.GetValue(maxSource);
            for (int i = 0; i < sources.Length; i++)
            {
                // One token more than fits tells whether the source was cut, without encoding a long one whole.
                bool truncated = tokenizer.EncodeSource(sources[i], limit + 1).Length > limit;
                var ids = tokenizer.EncodeSource(sources[i], limit);   // as in training and eval
                if (truncated) Terminal.Status($"warning: source {i + 1} is longer than {limit} tokens; only its first {limit - 1} were read (--max-source-length).");
                var output = SequenceDecoder.Generate(model, ids, 1, ids.Length, new DecodeOptions(r.GetValue(maxLen), r.GetValue(beam), 1f, !r.GetValue(noCache), r.GetValue(NoRepeatNgram)));
                // GPT-2 pieces carry their leading space; an output line starts with its first word.
                string generated = tokenizer.Decode(output[0]).Trim();
                if (r.GetValue(json))
                    Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new GenerateJson("nanolora.generate/1", sources[i], generated, ids.Length, truncated), JsonOutput.Lines));
                else Console.WriteLine(generated);
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

    /// <summary>The <c>merge</c> command: folds a LoRA adapter into the base weights and saves a plain checkpoint.</summary>
    public static Command Merge(Option<string?> device)
    {
        var output = new Option<string>("--out") { Description = "directory for the merged checkpoint", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace what --out already holds" };
        var cmd = new Command("merge", "Fold a LoRA adapter into the base weights (W += B·A·scaling) and save a plain checkpoint.") { ModelDir, AdapterDir, Force, output, overwrite };
        cmd.SetAction(r => Program.Guard(() =>
        {
            if (r.GetValue(AdapterDir) == null) throw new ArgumentException("merge needs --adapter DIR.");
            if (Path.GetFullPath(r.GetValue(output)!) == Path.GetFullPath(r.GetValue(ModelDir)!))
                throw new ArgumentException($"merge: --out '{r.GetValue(output)}' is the --model folder; the merged model would replace its base. Choose another --out.");
            RunFolders.RequireFresh(r.GetValue(output)!, r.GetValue(overwrite), "merge");
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var (model, tokenizer) = Checkpoint.Load(ShippedPaths.Resolve(r.GetValue(ModelDir)!), dev);
            using var _ = model;
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, r.GetValue(AdapterDir)!, "default", r.GetValue(Force), Terminal.Status);
            lora.SetActiveAdapter("default");
            lora.MergeAndUnload();
            Checkpoint.Save(r.GetValue(output)!, model, tokenizer);
            Console.WriteLine($"merged adapter into {model.ParameterCount():N0} parameters → {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}

/// <summary>eval --json (schema nanolora.eval/1).</summary>
internal sealed record EvalJson(string Schema, string Model, string? Adapter, string Task, string Split, int Examples, DecodingJson Decoding,
    IReadOnlyDictionary<string, RougeJson> Rouge, IReadOnlyDictionary<string, RougeJson> Lead8);

/// <summary>How the outputs were decoded.</summary>
internal sealed record DecodingJson(int Beam, int NoRepeatNgram, int MaxLength);

/// <summary>generate --json: one per source (schema nanolora.generate/1).</summary>
internal sealed record GenerateJson(string Schema, string Source, string Output, int SourceTokens, bool Truncated);
