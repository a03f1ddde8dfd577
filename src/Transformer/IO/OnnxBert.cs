using Google.Protobuf;
using Onnx;

namespace Nanolora.Transformer;

/// <summary>
/// Reads a BERT encoder's weights and hyper-parameters out of an ONNX graph exported by PyTorch (as
/// sentence-transformers' all-MiniLM-L6-v2 is). The graph is only read, never run. Embeddings, LayerNorms and
/// biases carry Hugging Face names; each Linear weight is an anonymous initializer stored [in, out] and is named
/// here by the MatMul that consumes it and the Add with the named bias that follows (…query.bias → …query.weight).
/// </summary>
public static class OnnxBert
{
    // The ops a PyTorch export of BertModel uses; anything else (fused attention, quantization) is refused.
    static readonly HashSet<string> KnownOps =
    [
        "Constant", "Unsqueeze", "Cast", "Sub", "Mul", "Shape", "Gather", "Add", "Slice", "ReduceMean", "Pow", "Sqrt",
        "Div", "MatMul", "Concat", "Reshape", "Transpose", "Softmax", "Erf", "Gemm", "Tanh",
    ];

    const int Float = 1, Int64 = 7;

    /// <summary>Reads a BERT model's configuration and its weights (Hugging Face names, Linear weights transposed to [out, in]) from ONNX bytes.</summary>
    /// <param name="bytes">The serialized ONNX model.</param>
    /// <param name="source">Names the model in errors.</param>
    public static (BertConfig Config, Dictionary<string, (int[] Shape, float[] Data)> Weights) Read(byte[] bytes, string source)
    {
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"{source}: not an ONNX model ({e.Message})."); }
        var graph = model.Graph ?? throw new InvalidDataException($"{source}: the ONNX model has no graph.");
        var unknown = graph.Node.Select(n => n.OpType).Where(op => !KnownOps.Contains(op)).Distinct().ToList();
        if (unknown.Count > 0)
            throw new InvalidDataException($"{source}: ONNX ops [{string.Join(", ", unknown)}] are not part of a plain BERT export; this reader understands only [{string.Join(", ", KnownOps)}].");

        var init = new Dictionary<string, TensorProto>();
        foreach (var t in graph.Initializer)
            if (!init.TryAdd(t.Name, t)) throw new InvalidDataException($"{source}: two initializers are named '{t.Name}'.");
        var consumers = new Dictionary<string, List<NodeProto>>();
        foreach (var n in graph.Node)
            foreach (var input in n.Input)
                (consumers.TryGetValue(input, out var list) ? list : consumers[input] = []).Add(n);

        var weights = new Dictionary<string, (int[] Shape, float[] Data)>();
        foreach (var (name, t) in init)
        {
            if (!name.Contains('.')) continue;                       // anonymous: shape constants and MatMul weights
            if (name == "embeddings.position_ids") continue;         // a buffer (0 … 511), not a weight
            if (name == "pooler.dense.weight") continue;             // Gemm operand, handled below with its transB
            weights[name] = (Dims(t, source), Floats(t, source));
        }

        foreach (var mm in graph.Node.Where(n => n.OpType == "MatMul"))
        {
            if (mm.Input.Count != 2 || !init.TryGetValue(mm.Input[1], out var w)) continue;   // activation × activation (attention scores)
            var add = consumers.GetValueOrDefault(mm.Output[0])?.FirstOrDefault(n => n.OpType == "Add");
            var bias = add?.Input.FirstOrDefault(i => i.EndsWith(".bias") && init.ContainsKey(i))
                ?? throw new InvalidDataException($"{source}: the weight '{mm.Input[1]}' of MatMul '{mm.Name}' is not followed by an Add with a named bias, so it can't be named.");
            var name = bias[..^".bias".Length] + ".weight";
            var dims = Dims(w, source);
            if (dims.Length != 2) throw new InvalidDataException($"{source}: MatMul weight '{mm.Input[1]}' ({name}) has {dims.Length} dimensions, expected 2.");
            weights[name] = ([dims[1], dims[0]], Transpose(Floats(w, source), dims[0], dims[1]));   // [in, out] → [out, in]
        }

        var gemm = graph.Node.FirstOrDefault(n => n.OpType == "Gemm" && n.Input.Contains("pooler.dense.weight"));
        if (gemm != null)
        {
            var t = init["pooler.dense.weight"];
            var dims = Dims(t, source);
            bool transB = gemm.Attribute.Any(a => a.Name == "transB" && a.I == 1);
            weights["pooler.dense.weight"] = transB ? (dims, Floats(t, source)) : ([dims[1], dims[0]], Transpose(Floats(t, source), dims[0], dims[1]));
        }

        return (InferConfig(graph, init, weights, source), weights);
    }

    static BertConfig InferConfig(GraphProto graph, Dictionary<string, TensorProto> init,
        Dictionary<string, (int[] Shape, float[] Data)> weights, string source)
    {
        (int[] Shape, float[] Data) Need(string name) =>
            weights.TryGetValue(name, out var w) ? w : throw new InvalidDataException($"{source}: no initializer '{name}'; is this a BertModel export?");
        var words = Need("embeddings.word_embeddings.weight").Shape;
        int hidden = words[1];
        int layers = 0;
        while (weights.ContainsKey($"encoder.layer.{layers}.attention.self.query.weight")) layers++;
        if (layers == 0) throw new InvalidDataException($"{source}: no encoder.layer.0.attention.self.query weight found.");
        if (!graph.Node.Any(n => n.OpType == "Erf"))
            throw new InvalidDataException($"{source}: the graph has no Erf node, so its activation is not the erf GELU this encoder implements.");
        return new BertConfig
        {
            VocabSize = words[0],
            HiddenSize = hidden,
            Layers = layers,
            Heads = InferHeads(graph, init, hidden, source),
            IntermediateSize = Need("encoder.layer.0.intermediate.dense.bias").Shape[0],
            MaxPositions = Need("embeddings.position_embeddings.weight").Shape[0],
            TypeVocabSize = Need("embeddings.token_type_embeddings.weight").Shape[0],
            LayerNormEps = InferEps(graph, init, source),
        };
    }

    /// <summary>The head count is a constant of the reshape [B, T, H, D] that splits heads: H·D = hidden.</summary>
    static int InferHeads(GraphProto graph, Dictionary<string, TensorProto> init, int hidden, string source)
    {
        foreach (var concat in graph.Node.Where(n => n.OpType == "Concat" && n.Input.Count == 4))
        {
            var h = ScalarInt(concat.Input[2], graph, init);
            var d = ScalarInt(concat.Input[3], graph, init);
            if (h is > 0 && d is > 0 && h * d == hidden) return (int)h.Value;
        }
        throw new InvalidDataException($"{source}: can't find the head count (no reshape to [B, T, H, D] with H·D = {hidden}).");
    }

    /// <summary>LayerNorm's ε is the constant added to the variance: Add(ReduceMean(Pow(x − mean, 2)), ε).</summary>
    static float InferEps(GraphProto graph, Dictionary<string, TensorProto> init, string source)
    {
        var producers = graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        foreach (var add in graph.Node.Where(n => n.OpType == "Add" && n.Input.Count == 2))
        {
            if (!producers.TryGetValue(add.Input[0], out var mean) || mean.OpType != "ReduceMean") continue;
            if (!producers.TryGetValue(mean.Input[0], out var pow) || pow.OpType != "Pow") continue;
            var t = ConstantTensor(add.Input[1], graph, init);
            if (t != null && t.DataType == Float) return Floats(t, source)[0];
        }
        throw new InvalidDataException($"{source}: can't find LayerNorm's epsilon (Add after ReduceMean of Pow).");
    }

    static TensorProto? ConstantTensor(string name, GraphProto graph, Dictionary<string, TensorProto> init)
    {
        if (init.TryGetValue(name, out var t)) return t;
        var node = graph.Node.FirstOrDefault(n => n.OpType == "Constant" && n.Output.Contains(name));
        return node?.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
    }

    static long? ScalarInt(string name, GraphProto graph, Dictionary<string, TensorProto> init)
    {
        var t = ConstantTensor(name, graph, init);
        if (t == null || t.DataType != Int64) return null;
        if (t.Int64Data.Count == 1) return t.Int64Data[0];
        return t.RawData.Length == 8 ? BitConverter.ToInt64(t.RawData.Span) : null;
    }

    static int[] Dims(TensorProto t, string source) =>
        t.Dims.Select(d => d is >= 0 and <= int.MaxValue ? (int)d
            : throw new InvalidDataException($"{source}: initializer '{t.Name}' has dimension {d}.")).ToArray();

    static float[] Floats(TensorProto t, string source)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new InvalidDataException($"{source}: initializer '{t.Name}' keeps its data in an external file, which is not supported.");
        if (t.DataType != Float)
            throw new InvalidDataException($"{source}: initializer '{t.Name}' has ONNX data type {t.DataType}, expected 1 (float32).");
        long count = t.Dims.Aggregate(1L, (a, d) => a * d);
        float[] data = t.RawData.Length > 0
            ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray()
            : t.FloatData.ToArray();
        if (data.Length != count)
            throw new InvalidDataException($"{source}: initializer '{t.Name}' holds {data.Length} floats, its shape [{string.Join(", ", t.Dims)}] needs {count}.");
        return data;
    }

    static float[] Transpose(float[] a, int rows, int cols)
    {
        var t = new float[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }
}
