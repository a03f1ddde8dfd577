using System.Text;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// The seed's worked example (one 512×64 per-head projection: 32,768 weights vs rank-r LoRA's r·(512+64))
/// and the real counts of a built model with LoRA injected. The text of <c>params</c> and its <c>--json</c> come from the
/// same numbers (schema nanolora.params/1, docs/cli-json.md).
/// </summary>
internal sealed record ParameterReport(string Schema, string Preset, int VocabSize, ParameterReport.ModelShape Model, ParameterReport.Matrix PerHeadProjection,
    ParameterReport.Matrix FullProjection, long Parameters, ParameterReport.Training FullFineTuning, ParameterReport.LoraCounts Lora)
{
    /// <summary>The model's dimensions.</summary>
    public sealed record ModelShape(int DModel, int Heads, int HeadWidth, int DFf, int EncoderLayers, int DecoderLayers);

    /// <summary>One weight matrix [rows × cols]: its parameter count and a rank-r LoRA's.</summary>
    public sealed record Matrix(int Rows, int Cols, long Full, long Lora, double PercentFewer);

    /// <summary>What a run trains and what AdamW keeps for it (two fp32 moments per trainable parameter).</summary>
    public sealed record Training(long TrainableParameters, double TrainablePercent, long OptimizerStateBytes);

    /// <summary>LoRA's counts on the built model; the percentage is of the base model's parameters.</summary>
    public sealed record LoraCounts(int Rank, IReadOnlyList<string> TargetModules, int AdaptedLayers, long TrainableParameters, double TrainablePercent,
        long OptimizerStateBytes, IReadOnlyList<LayerCount> Layers);

    /// <summary>One adapted layer: its module path and the adapter's parameter count.</summary>
    public sealed record LayerCount(string Module, long Parameters);

    static Matrix MatrixOf(int rows, int cols, int rank)
    {
        long full = (long)rows * cols, lora = (long)rank * (rows + cols);
        return new Matrix(rows, cols, full, lora, 100.0 * (1 - (double)lora / full));
    }

    public static ParameterReport Build(string preset, int rank, IReadOnlyList<string> targets, int vocab)
    {
        var config = TransformerConfig.Preset(preset, vocab);
        int d = config.DModel, head = config.HeadWidth;
        // Count on a real model, so the numbers come from the code that trains.
        using var model = new Seq2SeqTransformer(config with { Dropout = 0 }, Device.Cpu);
        long total = model.ParameterCount();
        var lm = LoraModel.Inject(model, new LoraConfig { R = rank, TargetModules = targets });
        var report = lm.Report();
        if (lm.Layers.Count == 0)
            throw new ArgumentException($"--targets {string.Join(",", targets)} matches no module of the '{preset}' model; its Linear layers end in q_proj, k_proj, v_proj, o_proj, fc1, fc2.");
        var layers = lm.AdapterWeights("default").Select(a => new LayerCount(a.Path, a.Adapter.Count)).ToList();
        return new ParameterReport("nanolora.params/1", preset, vocab,
            new ModelShape(d, config.Heads, head, config.DFF, config.EncoderLayers, config.DecoderLayers),
            MatrixOf(d, head, rank), MatrixOf(d, d, rank), total,
            new Training(total, 100, 2 * total * 4),
            new LoraCounts(rank, targets, lm.Layers.Count, report.Trainable, report.Percent, 2 * report.Trainable * 4, layers));
    }

    public string ToText()
    {
        var sb = new StringBuilder();
        var (p, s) = (PerHeadProjection, FullProjection);
        int r = Lora.Rank;
        sb.AppendLine($"One {p.Rows}×{p.Cols} per-head projection: {p.Full:N0} parameters; rank-{r} LoRA (B [{p.Rows}×{r}], A [{r}×{p.Cols}]): {p.Lora:N0} = {r}·({p.Rows}+{p.Cols}), {p.PercentFewer:F0}% fewer.");
        sb.AppendLine($"One {s.Rows}×{s.Cols} projection (all heads): {s.Full:N0} parameters; rank-{r} LoRA: {s.Lora:N0}, {s.PercentFewer:F1}% fewer.");
        sb.AppendLine();
        sb.AppendLine($"Model '{Preset}' (d_model {Model.DModel}, {Model.Heads} heads of {Model.HeadWidth}, d_ff {Model.DFf}, {Model.EncoderLayers}+{Model.DecoderLayers} layers, vocabulary {VocabSize:N0}): {Parameters:N0} parameters.");
        sb.AppendLine($"LoRA r={r} on [{string.Join(", ", Lora.TargetModules)}]: {Lora.AdaptedLayers} adapted layers.");
        sb.AppendLine($"Full fine-tuning trains {FullFineTuning.TrainableParameters:N0} parameters; AdamW keeps {FullFineTuning.OptimizerStateBytes:N0} bytes of state.");
        sb.AppendLine($"LoRA trains {Lora.TrainableParameters:N0} parameters ({Lora.TrainablePercent:F2}% of the base model's {Parameters:N0}); AdamW keeps {Lora.OptimizerStateBytes:N0} bytes of state.");
        sb.Append($"trainable params: {Lora.TrainableParameters:N0} || base params: {Parameters:N0} || trainable% (of base): {Lora.TrainablePercent:F2}");
        return sb.ToString();
    }
}
