using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Copies named tensors into a module's parameters, strictly as torch's load_state_dict(strict=True): every parameter
/// present with its shape, no tensor without a place, every value finite. Everything is read and checked before
/// anything is copied, so a file that does not fit leaves the model as it was. Checkpoints, ONNX initializers and
/// Hugging Face folders all load through here.
/// </summary>
public static class StateDictLoader
{
    /// <summary>Checks every tensor against the model's parameters, then copies them all in.</summary>
    /// <param name="model">The module whose parameters receive the values.</param>
    /// <param name="tensors">Name → shape and a reader of the values (read only once the names and shapes fit).</param>
    /// <param name="source">Names the file in errors.</param>
    /// <param name="allowMissing">Leave parameters the tensors do not name as they are instead of refusing.</param>
    public static void Load(Module model, IReadOnlyDictionary<string, (int[] Shape, Func<float[]> Read)> tensors, string source, bool allowMissing = false)
    {
        var parameters = model.NamedParameters().ToList();
        foreach (var (name, p) in parameters)
        {
            if (!tensors.TryGetValue(name, out var t))
            {
                if (allowMissing) continue;
                throw new InvalidDataException($"{source}: no tensor '{name}' (the model needs {p.Data.ShapeString}).");
            }
            if (!t.Shape.SequenceEqual(p.Data.ShapeArray()))
                throw new InvalidDataException($"{source}: tensor '{name}' has shape {ShapeMath.Format(t.Shape)}, the model needs {p.Data.ShapeString}.");
        }
        if (!allowMissing)
        {
            var names = parameters.Select(p => p.Name).ToHashSet();
            var unexpected = tensors.Keys.FirstOrDefault(k => !names.Contains(k));
            if (unexpected != null)
                throw new InvalidDataException($"{source}: tensor '{unexpected}' {ShapeMath.Format(tensors[unexpected].Shape)} has no place in the model; the file is for a different configuration.");
        }
        var values = new List<(Parameter Target, float[] Data)>();
        foreach (var (name, p) in parameters)
            if (tensors.TryGetValue(name, out var t))
            {
                var data = t.Read();
                NonFinite.Require(source, name, data, "Refusing to load");
                values.Add((p, data));
            }
        foreach (var (p, data) in values) p.Data.CopyFrom(data);
    }
}
