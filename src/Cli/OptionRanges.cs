using System.CommandLine;

namespace Nanolora.Cli;

/// <summary>
/// Parse-time ranges for numeric options: a value outside them is refused before anything loads or trains, with the
/// option's name, the value and the range (a negative --steps used to write an untrained model, --train-examples 0 to loop).
/// </summary>
internal static class OptionRanges
{
    public static Option<int> Range(this Option<int> option, int min, int max = int.MaxValue)
    {
        option.Validators.Add(r =>
        {
            int v = r.GetValueOrDefault<int>();
            if (v < min || v > max) r.AddError(Message(option.Name, v.ToString(), Describe(min, max)));
        });
        return option;
    }

    public static Option<int?> Range(this Option<int?> option, int min, int max = int.MaxValue)
    {
        option.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is int v && (v < min || v > max)) r.AddError(Message(option.Name, v.ToString(), Describe(min, max)));
        });
        return option;
    }

    /// <summary>A finite value in (0, max]: learning rates, alpha.</summary>
    public static Option<float> Positive(this Option<float> option, float max)
    {
        option.Validators.Add(r =>
        {
            float v = r.GetValueOrDefault<float>();
            if (!(v > 0 && v <= max)) r.AddError(Message(option.Name, v.ToString("R"), $"a finite number > 0 and ≤ {max:G}"));
        });
        return option;
    }

    public static Option<float?> Positive(this Option<float?> option, float max)
    {
        option.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<float?>() is float v && !(v > 0 && v <= max)) r.AddError(Message(option.Name, v.ToString("R"), $"a finite number > 0 and ≤ {max:G}"));
        });
        return option;
    }

    /// <summary>A probability in [0, 1): dropout rates.</summary>
    public static Option<float?> Fraction(this Option<float?> option)
    {
        option.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<float?>() is float v && !(v >= 0 && v < 1)) r.AddError(Message(option.Name, v.ToString("R"), "a number ≥ 0 and < 1"));
        });
        return option;
    }

    /// <summary>0 (off) or a finite ratio above 1.</summary>
    public static Option<float> OffOrAboveOne(this Option<float> option)
    {
        option.Validators.Add(r =>
        {
            float v = r.GetValueOrDefault<float>();
            if (!(v == 0 || (v > 1 && float.IsFinite(v)))) r.AddError(Message(option.Name, v.ToString("R"), "0 (off) or a finite number > 1"));
        });
        return option;
    }

    /// <summary>
    /// A value from a fixed list: the help shows the list (<c>&lt;debian|wordnet|manpages&gt;</c>, in this order), and any
    /// other value is refused on one line naming the option, the value and the choices.
    /// </summary>
    public static Option<string> Choices(this Option<string> option, params IReadOnlyList<string> choices)
    {
        option.HelpName = string.Join('|', choices);
        option.CompletionSources.Add(choices.ToArray());
        option.Validators.Add(r =>
        {
            string? v = r.GetValueOrDefault<string>();
            if (v == null || !choices.Contains(v)) r.AddError(Message(option.Name, $"'{v}'", "one of " + string.Join(", ", choices)));
        });
        return option;
    }

    static string Describe(int min, int max) => max == int.MaxValue ? $"an integer ≥ {min}" : $"an integer from {min} to {max}";

    static string Message(string option, string value, string allowed) => $"{option} is {value}; allowed: {allowed}.";
}
