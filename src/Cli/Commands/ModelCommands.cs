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
    static readonly Option<string[]> AdapterDir = new("--adapter")
    {
        Description = "a PEFT-format adapter folder to apply (adapter_config.json + adapter_model.safetensors), or NAME=FOLDER; repeat it to load several LoRA adapters onto one base (a single folder of another method loads as --peft does)",
        Arity = ArgumentArity.ZeroOrMore,
    };
    static readonly Option<string?> PeftDir = new("--peft")
    {
        Description = "a saved PEFT method folder of any kind, dispatched on its adapter_config.json's peft_type: LORA (as --adapter), SELECTIVE (bitfit, selective), LN_TUNING, IA3, BOTTLENECK (adapter-houlsby, adapter-pfeiffer)",
    };
    static readonly Option<string> BaseDType = new Option<string>("--base-dtype")
    {
        Description = "store the model's linear weights and embeddings in bfloat16 for this run (half their memory, rounded once; the GEMM and the lookup widen them, so the arithmetic stays float32) or keep float32",
        DefaultValueFactory = _ => "float32",
    }.Choices("float32", "bfloat16");
    static readonly Option<bool> Force = new("--force") { Description = "apply --adapter even to a base other than the one it was trained on (its recorded fingerprint differs)" };
    static readonly Option<int> NoRepeatNgram = new Option<int>("--no-repeat-ngram") { Description = "never repeat an n-gram of this many tokens in an output (0: off), as Hugging Face's no_repeat_ngram_size", DefaultValueFactory = _ => 0 }.Range(0, 64);

    /// <summary>Bounded so a beam's memory (beam × decode batch × cache) cannot grow without limit (beam 10000 reached 24 GB).</summary>
    const int MaxBeam = 64;

    /// <summary>Loads a checkpoint and the --adapter(s) given on top of it (the first active).</summary>
    static (Seq2SeqTransformer, ISeq2SeqTokenizer, AdapterSet) Load(ParseResult r, Option<string?> device)
    {
        var dev = Workflows.ResolveDevice(r.GetValue(device));
        var (model, tokenizer) = Checkpoint.Load(ShippedPaths.Resolve(r.GetValue(ModelDir)!), dev);
        try
        {
            AdapterSet adapters;
            if (r.GetValue(PeftDir) is not string peft) adapters = AdapterSet.Load(model, r.GetValue(AdapterDir), r.GetValue(Force));
            else if (r.GetValue(AdapterDir) is { Length: > 0 }) throw new ArgumentException($"--peft '{peft}' and --adapter both name what to apply; give one of them.");
            else adapters = AdapterSet.LoadPeft(model, peft, r.GetValue(Force));
            if (r.GetValue(BaseDType) == "bfloat16")
            {
                // Nothing trains here: every Linear weight and embedding table goes to 16 bits (LoRA's A and B, which are
                // not Linear modules, stay float32; a bottleneck adapter's projections are Linear modules and go too).
                model.SetTrainable(false);
                long saved = FrozenWeights.ToBFloat16(model);
                Terminal.Status($"base in bfloat16: {FrozenWeights.CountBFloat16(model):N0} values (linear weights and embeddings), {saved / 1048576.0:F1} MiB less");
            }
            return (model, tokenizer, adapters);
        }
        catch { model.Dispose(); throw; }
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
        var cmd = new Command("eval", "Score a model (optionally with one or several adapters, each in turn) on a task split: ROUGE beside the lead-8 baseline, or chrF and BLEU beside copying the source for a translation task.")
            { ModelDir, AdapterDir, PeftDir, Force, BaseDType, task, split, limit, beam, NoRepeatNgram, predictions, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer, adapters) = Load(r, device);
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            var examples = r.GetValue(split) switch { "train" => data.Train, "validation" => data.Validation, "test" => data.Test, var s => throw new ArgumentException($"Unknown split '{s}'; expected train, validation or test.") };
            examples = TaskData.Spread(examples, r.GetValue(limit));
            var decode = Workflows.DecodeFor(data.Name, r.GetValue(beam), r.GetValue(NoRepeatNgram));
            bool asJson = r.GetValue(json), several = adapters.Names.Count > 1;
            // Several adapters: each scored in turn on the one loaded base (switching, no reload); --json then writes one document a line.
            foreach (string? name in several ? adapters.Names.Cast<string?>() : [null])
            {
                string? label = name != null ? adapters.Folders[name] : adapters.Names.Count == 1 ? adapters.Folders[adapters.Names[0]] : adapters.PeftFolder;
                if (name != null)
                {
                    adapters.Lora!.SetActiveAdapter(name);
                    if (!asJson) Console.WriteLine($"adapter {name} ({label}):");
                }
                var result = Workflows.Evaluate(model, tokenizer, data.Name, examples, decode, name != null ? $"evaluating {name}" : "evaluating");
                if (r.GetValue(predictions) is string path)
                    AtomicFile.WriteAllText(name != null ? Path.ChangeExtension(path, $".{name}{Path.GetExtension(path)}") : path, string.Join('\n', result.Predictions) + "\n");
                WriteScores(result, examples, asJson, several, r.GetValue(ModelDir)!, label, data.Name, r.GetValue(split)!, decode);
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>One model's scores: ROUGE beside lead-8, or for a translation task chrF and BLEU beside copying the source.</summary>
    static void WriteScores(EvalResult result, IReadOnlyList<Example> examples, bool json, bool jsonLines, string model, string? adapter, string task, string split, DecodeOptions decode)
    {
        var summary = $"{examples.Count:N0} {split} examples, {(decode.BeamSize > 1 ? $"beam {decode.BeamSize}" : "greedy")}{(decode.NoRepeatNgramSize > 0 ? $", no repeated {decode.NoRepeatNgramSize}-grams" : "")}";
        if (TaskData.IsTranslation(task))
        {
            WriteTranslationScores(result, examples, json, jsonLines, model, adapter, task, split);
            if (!json) Console.WriteLine(summary);
            return;
        }
        // The lead-8 baseline (the source's first 8 words) on the same examples: the bar a summarizer must clear.
        var lead = Evaluator.LeadBaseline(examples).Rouge;
        if (json)
        {
            var document = new EvalJson("nanolora.eval/1", model, adapter, task, split, examples.Count,
                new DecodingJson(decode.BeamSize, decode.NoRepeatNgramSize, decode.MaxLength), JsonOutput.Rouge(result.Rouge), JsonOutput.Rouge(lead));
            if (jsonLines) Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(document, JsonOutput.Lines)); else JsonOutput.Write(document);
            return;
        }
        var table = new TextTable(new TextColumn("metric"), new TextColumn("precision", true), new TextColumn("recall", true), new TextColumn("F", true), new TextColumn("lead-8 F", true));
        foreach (var (name, s, l) in new[] { ("ROUGE-1", result.Rouge.Rouge1, lead.Rouge1), ("ROUGE-2", result.Rouge.Rouge2, lead.Rouge2), ("ROUGE-L", result.Rouge.RougeL, lead.RougeL), ("ROUGE-Lsum", result.Rouge.RougeLsum, lead.RougeLsum) })
            table.AddRow(name, s.Precision.ToString("F4"), s.Recall.ToString("F4"), s.F.ToString("F4"), l.F.ToString("F4"));
        Terminal.Write(table);
        Console.WriteLine(summary);
    }

    /// <summary>
    /// sacrebleu's corpus chrF2, chrF2++ and BLEU, and the uncased variants (not sacrebleu's default), beside the
    /// copy-the-source baseline: the English synopsis left untranslated, the bar a translator must clear.
    /// </summary>
    static void WriteTranslationScores(EvalResult result, IReadOnlyList<Example> examples, bool json, bool jsonLines, string model, string? adapter, string task, string split)
    {
        var scores = TranslationScores.Compute(result.Predictions, result.References);
        var copy = TranslationScores.Compute(examples.Select(e => e.Source).ToList(), result.References);
        if (json)
        {
            var document = new { schema = "nanolora.eval/1", model, adapter, task, split, examples = examples.Count, scores, copy_source = copy };
            if (jsonLines) Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(document, JsonOutput.Lines)); else JsonOutput.Write(document);
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
        var perLine = new Option<bool>("--adapter-per-line")
            { Description = $"each input is ADAPTER<TAB>SOURCE (an --adapter's name, or {MixedBatch.Base}), decoded in mixed-adapter batches; on by itself with several --adapter" };
        var batchSize = new Option<int>("--batch-size") { Description = "sources decoded together in the per-line mode", DefaultValueFactory = _ => 16 }.Range(1, 4096);
        var cmd = new Command("generate", "Generate a target (e.g. a synopsis) for each source text: one output a line on stdout; with several adapters, each line picks its own.")
            { ModelDir, AdapterDir, PeftDir, Force, BaseDType, text, beam, maxLen, maxSource, noCache, NoRepeatNgram, perLine, batchSize, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer, adapters) = Load(r, device);
            using var _ = model;
            var lines = r.GetValue(text) is { Length: > 0 } t ? t : ReadStdin();
            bool mixed = adapters.Names.Count > 1 || r.GetValue(perLine);
            if (mixed && adapters.Lora == null) throw new ArgumentException("--adapter-per-line needs at least one --adapter.");
            var requests = lines.Select((line, i) => mixed ? adapters.SplitLine(line, i + 1) : (Adapter: (string?)null, Source: line)).ToList();
            int limit = r.GetValue(maxSource);
            var decode = new DecodeOptions(r.GetValue(maxLen), r.GetValue(beam), 1f, !r.GetValue(noCache), r.GetValue(NoRepeatNgram));
            // One source at a time, as before, unless the lines pick adapters: then batches, each row with its own adapter.
            int chunk = mixed ? r.GetValue(batchSize) : 1;
            for (int start = 0; start < requests.Count; start += chunk)
            {
                var part = requests.Skip(start).Take(chunk).ToList();
                var encoded = new List<int[]>();
                var truncated = new List<bool>();
                for (int i = 0; i < part.Count; i++)
                {
                    // One token more than fits tells whether the source was cut, without encoding a long one whole.
                    truncated.Add(tokenizer.EncodeSource(part[i].Source, limit + 1).Length > limit);
                    encoded.Add(tokenizer.EncodeSource(part[i].Source, limit));   // as in training and eval
                    if (truncated[i]) Terminal.Status($"warning: source {start + i + 1} is longer than {limit} tokens; only its first {limit - 1} were read (--max-source-length).");
                }
                int length = encoded.Max(e => e.Length);
                var ids = new int[part.Count * length];   // padded with Pad (0), which the encoder masks
                for (int i = 0; i < part.Count; i++) encoded[i].CopyTo(ids, i * length);
                List<int[]> outputs;
                using (mixed ? adapters.Lora!.MixedBatch(part.Select(p => p.Adapter).ToList()) : null)
                    outputs = SequenceDecoder.Generate(model, ids, part.Count, length, decode);
                for (int i = 0; i < part.Count; i++)
                {
                    // GPT-2 pieces carry their leading space; an output line starts with its first word.
                    string generated = tokenizer.Decode(outputs[i]).Trim();
                    if (r.GetValue(json))
                        Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new GenerateJson("nanolora.generate/1", part[i].Source, generated, encoded[i].Length, truncated[i], part[i].Adapter), JsonOutput.Lines));
                    else Console.WriteLine(generated);
                }
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

    /// <summary>
    /// The <c>merge</c> command: folds a LoRA adapter into the base weights and saves a plain checkpoint; with several
    /// <c>--adapter</c>s (or <c>--combination</c>), first combines them as PEFT's add_weighted_adapter does, and can save the
    /// combined adapter itself (<c>--save-adapter</c>).
    /// </summary>
    public static Command Merge(Option<string?> device)
    {
        var adapters = new Option<string[]>("--adapter")
            { Description = "a PEFT-format LoRA adapter directory; repeat it to combine several (--weights, --combination)", Required = true, Arity = ArgumentArity.OneOrMore };
        var weights = new Option<string?>("--weights") { Description = "comma-separated weight per --adapter, in order (default: 1 each)" };
        var combination = new Option<string?>("--combination")
        {
            Description = "how several adapters combine (PEFT's combination_type): linear (equal ranks; factors summed), cat (ranks add; exact weighted sum), svd (exact sum truncated to --svd-rank)",
            HelpName = "linear|cat|svd",
        };
        var svdRank = new Option<int?>("--svd-rank") { Description = "svd: rank of the combined adapter (default: the largest input rank)" }.Range(1, 65_536);
        var output = new Option<string?>("--out") { Description = "directory for the merged checkpoint" };
        var saveAdapter = new Option<string?>("--save-adapter") { Description = "also (or, without --out, only) write the combined adapter here, in PEFT's layout" };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace what --out / --save-adapter already holds" };
        var cmd = new Command("merge", "Fold a LoRA adapter into the base weights (W += B·A·scaling) and save a plain checkpoint; several adapters are first combined (linear, cat or svd, weighted).")
            { ModelDir, adapters, weights, combination, svdRank, Force, output, saveAdapter, overwrite };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dirs = r.GetValue(adapters)!;
            string? outDir = r.GetValue(output), adapterOut = r.GetValue(saveAdapter);
            var plan = MergePlan.Parse(dirs.Length, r.GetValue(weights), r.GetValue(combination), r.GetValue(svdRank), outDir, adapterOut);
            foreach (var dir in new[] { outDir, adapterOut })
                if (dir != null && Path.GetFullPath(dir) == Path.GetFullPath(r.GetValue(ModelDir)!))
                    throw new ArgumentException($"merge: '{dir}' is the --model folder; the result would replace its base. Choose another folder.");
            if (outDir != null) RunFolders.RequireFresh(outDir, r.GetValue(overwrite), "merge");
            if (adapterOut != null) RunFolders.RequireFresh(adapterOut, r.GetValue(overwrite), "merge --save-adapter");
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var (model, tokenizer) = Checkpoint.Load(ShippedPaths.Resolve(r.GetValue(ModelDir)!), dev);
            using var _ = model;
            var lora = LoraModel.For(model);
            var names = dirs.Select((_, i) => $"adapter{i}").ToList();
            for (int i = 0; i < dirs.Length; i++) AdapterFiles.Load(lora, dirs[i], names[i], r.GetValue(Force), Terminal.Status);
            string active = names[0];
            if (plan.Combination is AdapterCombination how)
            {
                lora.AddWeightedAdapter(names, plan.Weights, "combined", how, plan.SvdRank);
                active = "combined";
            }
            lora.SetActiveAdapter(active);
            if (adapterOut != null)
            {
                AdapterFiles.Save(lora, active, adapterOut);
                Console.WriteLine($"{plan.Describe(dirs.Length)} adapter (rank {lora.Adapters[active].R}) → {adapterOut}");
            }
            if (outDir == null) return 0;
            lora.MergeAndUnload();
            Checkpoint.Save(outDir, model, tokenizer);
            Console.WriteLine($"merged {plan.Describe(dirs.Length)} adapter into {model.ParameterCount():N0} parameters → {outDir}");
            return 0;
        }));
        return cmd;
    }
}

/// <summary>merge's combination options, checked against each other before anything is loaded.</summary>
internal sealed record MergePlan(AdapterCombination? Combination, IReadOnlyList<float> Weights, int? SvdRank)
{
    /// <summary>"the", or "the cat-combined (weights 0.7, 0.3)".</summary>
    public string Describe(int adapters) => Combination is { } c
        ? $"the {c.ToString().ToLowerInvariant()}-combined (weights {string.Join(", ", Weights.Select(w => w.ToString("G", System.Globalization.CultureInfo.InvariantCulture)))})"
        : "the";

    /// <summary>Refuses, on one line naming the option, counts or values that do not fit together.</summary>
    public static MergePlan Parse(int adapters, string? weightList, string? combination, int? svdRank, string? output, string? saveAdapter)
    {
        if (output == null && saveAdapter == null) throw new ArgumentException("merge needs --out DIR (the merged checkpoint) or --save-adapter DIR (the combined adapter), or both.");
        AdapterCombination? how = combination switch
        {
            null => null,
            "linear" => AdapterCombination.Linear,
            "cat" => AdapterCombination.Cat,
            "svd" => AdapterCombination.Svd,
            _ => throw new ArgumentException($"--combination is '{combination}'; allowed: linear, cat, svd."),
        };
        if (how == null && adapters > 1) throw new ArgumentException($"merge: {adapters} --adapter folders need --combination linear, cat or svd.");
        if (how == null && weightList != null) throw new ArgumentException("merge: --weights needs --combination linear, cat or svd.");
        if (svdRank != null && how != AdapterCombination.Svd) throw new ArgumentException($"merge: --svd-rank needs --combination svd, got {combination ?? "none"}.");
        if (how == null && saveAdapter != null) throw new ArgumentException("merge: --save-adapter writes a combined adapter; it needs --combination linear, cat or svd.");
        var weights = new List<float>();
        if (weightList == null) weights.AddRange(Enumerable.Repeat(1f, adapters));
        else
            foreach (var part in weightList.Split(',', StringSplitOptions.TrimEntries))
            {
                if (!float.TryParse(part, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float w) || !float.IsFinite(w))
                    throw new ArgumentException($"--weights: '{part}' is not a finite number (expected e.g. 0.7,0.3).");
                weights.Add(w);
            }
        if (weights.Count != adapters)
            throw new ArgumentException($"--weights has {weights.Count} value{(weights.Count == 1 ? "" : "s")} but there {(adapters == 1 ? "is 1 --adapter" : $"are {adapters} --adapter folders")}; give one weight per adapter.");
        return new MergePlan(how, weights, svdRank);
    }
}

/// <summary>eval --json (schema nanolora.eval/1).</summary>
internal sealed record EvalJson(string Schema, string Model, string? Adapter, string Task, string Split, int Examples, DecodingJson Decoding,
    IReadOnlyDictionary<string, RougeJson> Rouge, IReadOnlyDictionary<string, RougeJson> Lead8);

/// <summary>How the outputs were decoded.</summary>
internal sealed record DecodingJson(int Beam, int NoRepeatNgram, int MaxLength);

/// <summary>generate --json: one per source (schema nanolora.generate/1).</summary>
internal sealed record GenerateJson(string Schema, string Source, string Output, int SourceTokens, bool Truncated, string? Adapter = null);
