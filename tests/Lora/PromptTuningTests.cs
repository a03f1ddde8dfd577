using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Lora.PromptTuning;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>Decoding checks the soft-prompt methods share: the KV cache must not change what the decoder computes.</summary>
internal static class SoftPromptDecoding
{
    /// <summary>
    /// Teacher-forced logits of the whole target at once equal the logits of feeding it one token a step through the cache,
    /// and greedy and beam decoding give the same tokens with and without the cache.
    /// </summary>
    public static void CacheChangesNothing(Seq2SeqTransformer model)
    {
        var b = TinyModels.CopyBatch(new Random(5), 3);
        int batch = b.BatchSize, t = b.TargetLength, v = model.Config.VocabSize;
        model.Eval();
        using (Graph.NoGrad())
        using (new GraphScope())
        {
            var (memory, mask) = model.Encode(b.SourceIds, batch, b.SourceLength);
            using var _ = mask;
            var full = model.Logits(model.Decode(b.TargetInput, batch, t, memory, mask)).Data.ToArray();
            var caches = model.NewCaches();
            try
            {
                for (int step = 0; step < t; step++)
                {
                    var ids = Enumerable.Range(0, batch).Select(r => b.TargetInput[r * t + step]).ToArray();
                    var logits = model.Logits(model.Decode(ids, batch, 1, memory, mask, caches, positionOffset: step)).Data.ToArray();
                    var expected = Enumerable.Range(0, batch).SelectMany(r => full.Skip((r * t + step) * v).Take(v)).ToArray();
                    PeftMethodChecks.Close(expected, logits, 1e-4, $"cached step {step}");
                }
            }
            finally { foreach (var c in caches) c.Dispose(); }
        }
        foreach (int beam in new[] { 1, 3 })
        {
            var cached = SequenceDecoder.Generate(model, b.SourceIds, batch, b.SourceLength, new DecodeOptions(MaxLength: 6, BeamSize: beam, UseCache: true));
            var uncached = SequenceDecoder.Generate(model, b.SourceIds, batch, b.SourceLength, new DecodeOptions(MaxLength: 6, BeamSize: beam, UseCache: false));
            for (int i = 0; i < batch; i++)
                Assert.True(cached[i].SequenceEqual(uncached[i]), $"beam {beam}, row {i}: cached [{string.Join(",", cached[i])}] vs uncached [{string.Join(",", uncached[i])}]");
        }
    }
}

public class PromptTuningTests
{
    static IReadOnlyList<int> Numbers(string text) => text.Split(' ').Select(int.Parse).ToList();

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void Lifecycle(string kind) => PeftMethodChecks.Lifecycle(kind, m => PromptTuningModel.For(m),
        new PromptTuningConfig { NumVirtualTokens = 3 },
        new PromptTuningConfig { NumVirtualTokens = 2, NumTransformerSubmodules = 1 }, freshIsBase: false);

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void GradientsMatchFiniteDifferences(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        var prompt = PromptTuningModel.Inject(s.Model, new PromptTuningConfig { NumVirtualTokens = 3 });
        // The seq2seq table holds the encoder's rows and the decoder's: the checked entries 0, n/3 and n−1 reach both.
        Assert.Equal(kind == "bert" ? [3, 16] : new[] { 6, 16 }, prompt.Tables["default"].Weight.Data.ShapeArray());
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, prompt, "default");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void TextInitCopiesTheTextsTokenEmbeddingsRepeatedOrCut(string kind)
    {
        using var s = TinySubject.Make(kind);
        var prompt = PromptTuningModel.For(s.Model, Numbers);
        prompt.Add("repeated", new PromptTuningConfig { NumVirtualTokens = 4, PromptTuningInit = PromptInit.Text, PromptTuningInitText = "5 7 9" });
        prompt.Add("cut", new PromptTuningConfig { NumVirtualTokens = 2, NumTransformerSubmodules = 1, PromptTuningInit = PromptInit.Text, PromptTuningInitText = "4 6 8 10" });
        var (table, scale) = kind == "bert"
            ? (((Embedding)s.Model.GetModule("embeddings.word_embeddings")).Weight.Data.ToArray(), 1f)
            : (((Embedding)s.Model.GetModule("shared")).Weight.Data.ToArray(), MathF.Sqrt(16));   // the seq2seq word embeddings are ×√C
        void Expect(string name, int[] ids)
        {
            var rows = prompt.Tables[name].Weight.Data.ToArray();
            Assert.Equal(ids.Length * 16, rows.Length);
            for (int r = 0; r < ids.Length; r++)
                PeftMethodChecks.Close(table.Skip(ids[r] * 16).Take(16).Select(x => x * scale).ToArray(), rows.Skip(r * 16).Take(16).ToArray(), 1e-6, $"{name} row {r}");
        }
        Expect("repeated", kind == "bert" ? [5, 7, 9, 5] : [5, 7, 9, 5, 7, 9, 5, 7]);   // seq2seq: 2 submodules × 4
        Expect("cut", [4, 6]);
        var e = Assert.Throws<ArgumentException>(() => PromptTuningModel.For(s.Model).Add("x", new PromptTuningConfig { PromptTuningInit = PromptInit.Text, PromptTuningInitText = "5" }));
        Assert.Contains("tokenizer", e.Message);
        e = Assert.Throws<ArgumentException>(() => prompt.Add("y", new PromptTuningConfig { PromptTuningInit = "WORDS" }));
        Assert.Contains("prompt_tuning_init", e.Message);
        prompt.Add("sampled", new PromptTuningConfig { NumVirtualTokens = 3, NumTransformerSubmodules = 1, PromptTuningInit = PromptInit.SampleVocab }, seed: 4);
        var sampled = prompt.Tables["sampled"].Weight.Data.ToArray();
        for (int r = 0; r < 3; r++)
        {
            var row = sampled.Skip(r * 16).Take(16).ToArray();
            Assert.True(Enumerable.Range(0, table.Length / 16).Any(v => table.Skip(v * 16).Take(16).Select(x => x * scale).SequenceEqual(row)), $"sampled row {r} is no vocabulary row");
        }
    }

    /// <summary>
    /// PEFT's semantics: the prompt is concatenated to the word embeddings and the base embeds the whole, so prompt rows equal
    /// to the word embeddings of ids q make the model compute exactly what the base computes for the input q ++ x (virtual
    /// tokens at positions 0 … P−1, real tokens after them, all admitted by the mask), less the prompt rows.
    /// </summary>
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void APromptOfTokenEmbeddingsIsThoseTokensPrepended(string kind)
    {
        int[] q = [5, 7, 9];
        if (kind == "bert")
        {
            using var bert = new BertModel(TinySubject.BertTiny, Device.Cpu, pooler: false);
            var x = EncoderBatch.Pad([[2, 5, 7, 9, 11], [3, 4, 6]], multiple: 1);
            var joined = EncoderBatch.Pad([[.. q, 2, 5, 7, 9, 11], [.. q, 3, 4, 6]], multiple: 1);
            var expected = Run(() => F.Slice(bert.Forward(joined), 1, 3, x.Length));
            PromptTuningModel.Inject(bert, new PromptTuningConfig { NumVirtualTokens = 3, PromptTuningInit = PromptInit.Text, PromptTuningInitText = "5 7 9" }, tokenize: Numbers);
            PeftMethodChecks.Close(expected, Run(() => bert.Forward(x)), 1e-5, "bert with a token prompt");
            return;
        }
        using var model = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu);
        var b = TinyModels.CopyBatch(new Random(3), 2);
        int[] Prepend(int[] ids, int length) => Enumerable.Range(0, b.BatchSize).SelectMany(r => q.Concat(ids.Skip(r * length).Take(length))).ToArray();
        var src = Prepend(b.SourceIds, b.SourceLength);
        var tgt = Prepend(b.TargetInput, b.TargetLength);
        var expectedLogits = Run(() =>
        {
            var (memory, mask) = model.Encode(src, b.BatchSize, b.SourceLength + 3);
            using (mask) return F.Slice(model.Logits(model.Decode(tgt, b.BatchSize, b.TargetLength + 3, memory, mask)), 1, 3, b.TargetLength);
        });
        PromptTuningModel.Inject(model, new PromptTuningConfig { NumVirtualTokens = 3, PromptTuningInit = PromptInit.Text, PromptTuningInitText = "5 7 9" }, tokenize: Numbers);
        var actual = Run(() =>
        {
            var (memory, mask) = model.Encode(b.SourceIds, b.BatchSize, b.SourceLength);
            Assert.Equal(b.SourceLength + 3, mask.Dim(1));   // the mask admits the virtual tokens
            using (mask) return model.Logits(model.Decode(b.TargetInput, b.BatchSize, b.TargetLength, memory, mask));
        });
        PeftMethodChecks.Close(expectedLogits, actual, 1e-5, "seq2seq with encoder and decoder token prompts");
    }

    static float[] Run(Func<Variable> f)
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        return f().Data.ToArray();
    }

    [Fact]
    public void DecodingWithTheCacheEqualsDecodingWithout()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu);
        var prompt = PromptTuningModel.Inject(model, new PromptTuningConfig { NumVirtualTokens = 3 });
        Assert.Equal(2, prompt.Tables["default"].Submodules);   // the decoder has a prompt too
        SoftPromptDecoding.CacheChangesNothing(model);
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void MergeIsRefusedAndUnloadGivesTheBase(string kind)
    {
        using var s = TinySubject.Make(kind);
        var baseOut = s.Output();
        var prompt = PromptTuningModel.Inject(s.Model, new PromptTuningConfig { NumVirtualTokens = 2 });
        var e = Assert.Throws<NotSupportedException>(() => prompt.Merge());
        Assert.Contains("Prompt tuning cannot be merged", e.Message);
        Assert.Throws<NotSupportedException>(() => prompt.MergeAndUnload());
        Assert.False(prompt.CanMerge);
        prompt.Unload();
        Assert.DoesNotContain(s.Model.NamedParameters(), p => p.Name.StartsWith("prompt_encoder"));
        PeftMethodChecks.Bitwise(baseOut, s.Output(), "unloaded");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void FileHasPeftsLayoutAndRefusesWhatItCannotLoad(string kind)
    {
        using var s = TinySubject.Make(kind);
        var prompt = PromptTuningModel.Inject(s.Model, new PromptTuningConfig { NumVirtualTokens = 3, PromptTuningInit = PromptInit.Text, PromptTuningInitText = "5 7", TokenizerNameOrPath = "tiny" }, tokenize: Numbers);
        var dir = Directory.CreateTempSubdirectory("nanolora-prompt-").FullName;
        try
        {
            prompt.Save("default", dir);
            var file = Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.Equal(["prompt_embeddings"], file.Entries.Select(e => e.Name));
            Assert.Equal(kind == "bert" ? [3, 16] : new[] { 6, 16 }, file.Entry("prompt_embeddings").Shape);
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
            Assert.Equal("PROMPT_TUNING", (string?)json["peft_type"]);
            Assert.Equal(kind == "bert" ? "FEATURE_EXTRACTION" : "SEQ_2_SEQ_LM", (string?)json["task_type"]);
            Assert.Equal(3, (int)json["num_virtual_tokens"]!);
            Assert.Equal(16, (int)json["token_dim"]!);
            Assert.Equal(kind == "bert" ? 1 : 2, (int)json["num_transformer_submodules"]!);
            Assert.Equal("TEXT", (string?)json["prompt_tuning_init"]);
            Assert.Equal("5 7", (string?)json["prompt_tuning_init_text"]);
            // Loading needs no tokenizer: the values come from the file.
            prompt.Load(dir, "again");
            PeftMethodChecks.Bitwise(prompt.Tables["default"].Weight.Data.ToArray(), prompt.Tables["again"].Weight.Data.ToArray(), "loaded table");
            void Refused(string field, JsonNode value, string needle)
            {
                var changed = json.DeepClone().AsObject();
                changed[field] = value;
                File.WriteAllText(Path.Combine(dir, "adapter_config.json"), changed.ToJsonString());
                var e = Assert.Throws<InvalidDataException>(() => prompt.Load(dir, "x"));
                Assert.Contains(needle, e.Message);
            }
            Refused("token_dim", 32, "token_dim");
            Refused("num_virtual_tokens", 4, "prompt_embeddings");   // the tensor no longer fits
            Refused("prompt_tuning_init", "WORDS", "prompt_tuning_init");
            Refused("modules_to_save", new JsonArray("lm_head"), "modules_to_save");
            if (kind == "bert") Refused("num_transformer_submodules", 2, "num_transformer_submodules");
            Assert.Equal(["default", "again"], prompt.Instances);   // a refused load adds nothing
            var second = Assert.Throws<ArgumentException>(() => PromptTuningModel.Inject(s.Model, new PromptTuningConfig(), "other"));
            Assert.Contains("one per model", second.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
