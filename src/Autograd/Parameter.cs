using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// A named weight that is trainable or frozen. A frozen parameter has no gradient buffer and backward
/// does no work for it (rules check <see cref="Variable.RequiresGrad"/> before computing an input's gradient).
/// </summary>
public sealed class Parameter : Variable
{
    public string Name { get; }

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

    public override bool RequiresGrad
    {
        get => base.RequiresGrad;
        set
        {
            base.RequiresGrad = value;
            if (!value) ZeroGrad();
        }
    }

    public long Count => Data.Length;
    public override string ToString() => $"Parameter {Name}{Data.ShapeString}{(Trainable ? "" : " (frozen)")}";
}
