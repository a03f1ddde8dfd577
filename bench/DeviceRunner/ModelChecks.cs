using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.DeviceRunner;

/// <summary>
/// Whole models on the device against the same models on the cpu backend: what the op checks cannot see is how the
/// ops compose (views, graph, fused launches in sequence, buffer reuse by the pool). Both models are built from the
/// same seeds; parameters and dropout masks come from host-side counters, so the two runs are the same computation.
/// </summary>
public static class ModelChecks
{
    public static IEnumerable<OpCheck> All()
    {
        yield return new("model", "seq2seq loss and every gradient (dropout 0.1, label smoothing 0.1)", Seq2Seq, 1e-4, 1e-3);
        yield return new("model", "seq2seq loss and gradients with LoRA on q,k,v,o", p => Seq2Seq(p, lora: true), 1e-4, 1e-3);
        yield return new("model", "BERT hidden states, pooler, embeddings; with a LoRA adapter", Bert, 1e-4, 1e-3);
    }

    static readonly TransformerConfig TinySeq2Seq = new()
    {
        VocabSize = 61, DModel = 32, Heads = 4, DFF = 48, EncoderLayers = 2, DecoderLayers = 1, Dropout = 0.1f, PreNorm = false, MaxPositions = 64,
    };

    /// <summary>B 3, S 11 (the last row padded by 4), T 6; tokens from 4 up (0–3 are specials).</summary>
    public static Batch TinyBatch(int vocab)
    {
        const int b = 3, s = 11, t = 6;
        var src = new int[b * s];
        var lengths = new[] { s, s, s - 4 };
        for (int i = 0; i < b; i++)
            for (int j = 0; j < s; j++) src[i * s + j] = j < lengths[i] ? 4 + (i * 31 + j * 17) % (vocab - 4) : SubwordTokenizer.Pad;
        var tin = new int[b * t];
        var tout = new int[b * t];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                int y = 4 + (i * 13 + j * 29) % (vocab - 4);
                tout[i * t + j] = j == t - 1 ? SubwordTokenizer.Eos : y;
                tin[i * t + j] = j == 0 ? SubwordTokenizer.Bos : tout[i * t + j - 1];
            }
        return new Batch(src, tin, tout, b, s, t, lengths);
    }

    static IEnumerable<(string, float[])> Seq2Seq(Probe p) => Seq2Seq(p, lora: false);

    static IEnumerable<(string, float[])> Seq2Seq(Probe p, bool lora)
    {
        using var model = new Seq2SeqTransformer(TinySeq2Seq, p.Device);
        if (lora)
        {
            var adapters = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] });
            RandomizeLoraB(adapters, 3);
        }
        var outputs = new List<(string, float[])>();
        using (new GraphScope())
        {
            var loss = model.Loss(TinyBatch(TinySeq2Seq.VocabSize), 0.1f);
            outputs.Add(("loss", loss.Data.ToArray()));
            loss.Backward();
        }
        foreach (var (name, parameter) in model.NamedParameters().Where(x => x.Parameter.Trainable).OrderBy(x => x.Name, StringComparer.Ordinal))
            outputs.Add(($"grad {name}", parameter.Grad?.ToArray() ?? throw new InvalidOperationException($"{name} received no gradient.")));
        return outputs;
    }

    /// <summary>LoRA's B starts at zero, which would hide the adapter path: give it seeded values.</summary>
    public static void RandomizeLoraB(LoraModel lora, ulong seed)
    {
        foreach (var (_, adapter) in lora.AdapterWeights(lora.Adapters.Keys.First()))
        {
            using var values = TensorRandom.Uniform(adapter.B.Data.Shape, -0.05f, 0.05f, seed++, Device.Cpu);
            adapter.B.Data.CopyFrom(values.ToArray());
        }
    }

    static IEnumerable<(string, float[])> Bert(Probe p)
    {
        var vocab = SmallBert.Vocabulary(SmallBert.Texts);
        var tokenizer = new BertWordPieceTokenizer(vocab, true, 32);
        using var model = SmallBert.Build(p.Device, tokenizer.VocabSize, layers: 2);
        var batch = tokenizer.EncodeBatch(SmallBert.Texts);
        var outputs = new List<(string, float[])>();
        void Forward(string tag)
        {
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            var hidden = model.Forward(batch);
            outputs.Add(($"{tag} last_hidden_state", hidden.Data.ToArray()));
            outputs.Add(($"{tag} pooler_output", model.Pooler(hidden).Data.ToArray()));
            outputs.Add(($"{tag} sentence embedding", BertModel.MeanPoolNormalized(hidden, batch).Data.ToArray()));
        }
        Forward("base");
        var lora = LoraModel.Inject(model, SmallBert.Adapter);
        RandomizeLoraB(lora, 11);
        Forward("lora");
        return outputs;
    }
}
