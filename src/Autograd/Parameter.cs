using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// A named weight that is trainable or frozen. A frozen parameter has no gradient buffer and backward
/// does no work for it (rules check <see cref="Variable.RequiresGrad"/> before computing an input's gradient).
/// </summary>
public sealed class Parameter : Variable
{
    /// <summary>The parameter's own name (e.g. <c>weight</c>); a module path prefixes it in <see cref="Module.NamedParameters"/>.</summary>
    public string Name { get; }

    /// <summary>Takes ownership of <paramref name="data"/> and counts it as <see cref="MemoryCategory.Parameter"/> memory.</summary>
    public Parameter(string name, Tensor data, bool trainable = true) : base(data, trainable)
    {
        Name = name;
        data.Category = MemoryCategory.Parameter;
    }

    /// <summary>Same as RequiresGrad. Freezing drops the gradient buffer.</summary>
    public bool Trainable
    {
        get => RequiresGrad;
        set => RequiresGrad = value;
    }

    /// <summary>Same as <see cref="Trainable"/>; setting it to false disposes the gradient.</summary>
    public override bool RequiresGrad
    {
        get => base.RequiresGrad;
        set
        {
            if (value && Data.DType != Nanolora.Tensors.DType.Float32)
                throw new InvalidOperationException($"Parameter {Name}{Data.ShapeString} is stored in {Data.DType} as a frozen weight and cannot train; load the base in float32 to train it.");
            base.RequiresGrad = value;
            if (!value) ZeroGrad();
        }
    }

    /// <summary>Number of elements (scalar weights).</summary>
    public long Count => Data.Length;
    /// <summary>Name, shape and "(frozen)" when not trainable.</summary>
    public override string ToString() => $"Parameter {Name}{Data.ShapeString}{(Trainable ? "" : " (frozen)")}";
}
