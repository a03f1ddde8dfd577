using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// The adapters of <c>eval</c> and <c>generate</c>: each <c>--adapter</c> is a folder, or <c>NAME=FOLDER</c>, all loaded
/// onto one base. One unnamed adapter is "default" and is simply active (the commands' behaviour before several were
/// allowed). With several, <c>generate</c> reads <c>NAME&lt;TAB&gt;SOURCE</c> lines and decodes them in mixed-adapter
/// batches (<see cref="LoraModel.MixedBatch"/>), and <c>eval</c> scores each adapter in turn.
/// </summary>
internal sealed class AdapterSet
{
    /// <summary>The LoRA view of the model, or null when no adapter was given.</summary>
    public LoraModel? Lora { get; }
    /// <summary>The adapters' names, in the order given.</summary>
    public IReadOnlyList<string> Names { get; }
    /// <summary>Each adapter's folder, by name.</summary>
    public IReadOnlyDictionary<string, string> Folders { get; }
    /// <summary>The non-LoRA method loaded with <c>--peft</c> (BitFit, LN tuning, (IA)³, bottleneck adapters), or null.</summary>
    public IPeftMethod? Peft { get; private init; }
    /// <summary>The folder <see cref="Peft"/> was loaded from.</summary>
    public string? PeftFolder { get; private init; }

    AdapterSet(LoraModel? lora, IReadOnlyList<string> names, IReadOnlyDictionary<string, string> folders) { Lora = lora; Names = names; Folders = folders; }

    /// <summary>
    /// <c>--peft FOLDER</c>: any saved PEFT method, by its config's <c>peft_type</c>. LORA loads exactly as one
    /// <c>--adapter FOLDER</c> does; the other types load through <see cref="PeftRecipes.Load"/> and become active.
    /// </summary>
    public static AdapterSet LoadPeft(Seq2SeqTransformer model, string folder, bool force)
    {
        if (PeftRecipes.PeftTypeOf(folder) is "LORA") return Load(model, [folder], force);
        var method = PeftRecipes.Load(model, folder, "--peft", Terminal.Status);
        return new AdapterSet(null, [], new Dictionary<string, string>()) { Peft = method, PeftFolder = folder };
    }

    /// <summary>Loads every <c>--adapter</c> value (<c>FOLDER</c> or <c>NAME=FOLDER</c>) onto <paramref name="model"/>; the first becomes active.</summary>
    public static AdapterSet Load(Seq2SeqTransformer model, IReadOnlyList<string>? specs, bool force)
    {
        if (specs is not { Count: > 0 }) return new AdapterSet(null, [], new Dictionary<string, string>());
        var folders = new Dictionary<string, string>();
        var names = new List<string>();
        foreach (var spec in specs)
        {
            var (name, folder) = Parse(spec, specs.Count);
            if (name == MixedBatch.Base) throw new ArgumentException($"--adapter '{spec}': \"{MixedBatch.Base}\" names the base model itself; give the adapter another name.");
            if (!folders.TryAdd(name, folder)) throw new ArgumentException($"--adapter '{spec}': the name '{name}' is given twice; name them NAME=FOLDER.");
            names.Add(name);
        }
        // One folder of another PEFT method loads as --peft would: the folder's config says what it is, as in PEFT's
        // from_pretrained. Several can only be LoRA adapters, switched by name.
        if (names.Count == 1 && PeftRecipes.PeftTypeOf(folders[names[0]]) is string single && PeftRecipes.LoadableTypes.Contains(single))
            return LoadPeft(model, folders[names[0]], force);
        foreach (var name in names)
            if (PeftRecipes.PeftTypeOf(folders[name]) is string type && PeftRecipes.LoadableTypes.Contains(type))
                throw new ArgumentException($"--adapter '{folders[name]}' holds a {type} adapter, not LoRA; several --adapter folders must all be LoRA (switched by name); load it alone, or with --peft {folders[name]}.");
        var lora = LoraModel.For(model);
        foreach (var name in names) AdapterFiles.Load(lora, folders[name], name, force, Terminal.Status);
        lora.SetActiveAdapter(names[0]);
        return new AdapterSet(lora, names, folders);
    }

    /// <summary>NAME=FOLDER, or FOLDER alone: "default" when it is the only adapter, else the folder's name.</summary>
    static (string Name, string Folder) Parse(string spec, int count)
    {
        int eq = spec.IndexOf('=');
        // A folder may itself contain '=' — only a NAME part that is not a path counts as a name.
        if (eq > 0 && !Directory.Exists(spec) && spec[..eq].IndexOfAny(['/', '\\']) < 0)
            return (spec[..eq], spec[(eq + 1)..]);
        if (count == 1) return ("default", spec);
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(spec));
        return (string.IsNullOrEmpty(name) ? spec : name, spec);
    }

    /// <summary>
    /// Splits a per-line input <c>NAME&lt;TAB&gt;SOURCE</c>; NAME is one of <see cref="Names"/> or "__base__". The error
    /// names the line and lists the names.
    /// </summary>
    public (string Adapter, string Source) SplitLine(string line, int number)
    {
        int tab = line.IndexOf('\t');
        if (tab <= 0)
            throw new ArgumentException($"input line {number}: expected ADAPTER<TAB>SOURCE (adapters: {string.Join(", ", Names)}, or {MixedBatch.Base}), got '{Shorten(line)}'.");
        string name = line[..tab].Trim();
        if (name != MixedBatch.Base && !Folders.ContainsKey(name))
            throw new ArgumentException($"input line {number}: no adapter '{name}'; expected one of {string.Join(", ", Names)} or {MixedBatch.Base}.");
        return (name, line[(tab + 1)..]);
    }

    static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
