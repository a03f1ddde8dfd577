namespace Nanolora.Cli;

/// <summary>
/// Default paths that name shipped files (<c>models/base-tiny</c>) resolve from the current directory first, then from
/// the program's installation: the build and the .NET tool carry a copy beside the program, and a checkout's build
/// finds the repository's folder among the program directory's parents. So <c>nanolora generate</c> works from any
/// directory, not only from the checkout's root.
/// </summary>
internal static class ShippedPaths
{
    /// <summary>The small seq2seq base the commands start from by default (2M parameters: trains in minutes on a CPU).</summary>
    public const string BaseModel = "models/base-tiny";

    /// <summary>The experiment's base: BERT2BERT on all-MiniLM-L6-v2, its decoder trained with the synopsis task held out.</summary>
    public const string MiniLmBase = "models/base-minilm";

    /// <summary>
    /// <paramref name="path"/> as given when it exists or is not a shipped default; otherwise the first copy found beside
    /// the program or in one of its parent folders. When none exists the path comes back unchanged, and the error that
    /// follows names it as the user gave it.
    /// </summary>
    public static string Resolve(string path)
    {
        if (path is not (BaseModel or MiniLmBase) || Directory.Exists(path) || File.Exists(path)) return path;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, path);
            if (Directory.Exists(candidate) || File.Exists(candidate)) return candidate;
        }
        return path;
    }
}
