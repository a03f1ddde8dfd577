namespace Nanolora.Transformer;

/// <summary>
/// The Porter stemmer exactly as NLTK's <c>PorterStemmer()</c> runs it in its default NLTK_EXTENSIONS mode, which is
/// what Google's rouge_score constructs for <c>use_stemmer=True</c>: the 1980 algorithm plus Martin Porter's later
/// changes (bli→ble, logi→log) and NLTK's (an irregular-forms table, 1-2 letter words unchanged, ies/ied on 4-letter
/// words → ie, y→i only after a consonant, alli handled before the rest of step 2, fulli→ful).
/// Input is expected lower-case a-z.
/// </summary>
public static class PorterStemmer
{
    static readonly Dictionary<string, string> Irregular = new(StringComparer.Ordinal)
    {
        ["sky"] = "sky", ["skies"] = "sky", ["dying"] = "die", ["lying"] = "lie", ["tying"] = "tie",
        ["news"] = "news", ["innings"] = "inning", ["inning"] = "inning", ["outings"] = "outing", ["outing"] = "outing",
        ["cannings"] = "canning", ["canning"] = "canning", ["howe"] = "howe",
        ["proceed"] = "proceed", ["exceed"] = "exceed", ["succeed"] = "succeed",
    };

    /// <summary>The stem of a lower-case word, as NLTK's PorterStemmer returns it.</summary>
    public static string Stem(string word)
    {
        string w = word.ToLowerInvariant();
        if (Irregular.TryGetValue(w, out var irregular)) return irregular;
        if (w.Length <= 2) return w;
        w = Step1a(w);
        w = Step1b(w);
        w = Step1c(w);
        w = Step2(w);
        w = Step3(w);
        w = Step4(w);
        w = Step5a(w);
        return Step5b(w);
    }

    static bool IsConsonant(string w, int i)
    {
        // y is a consonant at the start or after a vowel, a vowel after a consonant.
        switch (w[i])
        {
            case 'a' or 'e' or 'i' or 'o' or 'u': return false;
            case 'y': return i == 0 || !IsConsonant(w, i - 1);
            default: return true;
        }
    }

    /// <summary>m in [C](VC){m}[V]: the number of vowel→consonant transitions.</summary>
    static int Measure(string stem)
    {
        int m = 0;
        for (int i = 1; i < stem.Length; i++)
            if (!IsConsonant(stem, i - 1) && IsConsonant(stem, i)) m++;
        return m;
    }

    static bool ContainsVowel(string stem)
    {
        for (int i = 0; i < stem.Length; i++) if (!IsConsonant(stem, i)) return true;
        return false;
    }

    static bool EndsDoubleConsonant(string w) => w.Length >= 2 && w[^1] == w[^2] && IsConsonant(w, w.Length - 1);

    /// <summary>*o: ends consonant-vowel-consonant, last not w/x/y; NLTK also counts a 2-letter vowel-consonant word.</summary>
    static bool EndsCvc(string w) =>
        (w.Length >= 3 && IsConsonant(w, w.Length - 3) && !IsConsonant(w, w.Length - 2) && IsConsonant(w, w.Length - 1)
         && w[^1] is not ('w' or 'x' or 'y'))
        || (w.Length == 2 && !IsConsonant(w, 0) && IsConsonant(w, 1));

    static bool PositiveMeasure(string stem) => Measure(stem) > 0;
    static bool MeasureAbove1(string stem) => Measure(stem) > 1;

    readonly record struct Rule(string Suffix, string Replacement, Func<string, bool>? Condition);

    /// <summary>
    /// NLTK's rule-list semantics: the FIRST rule whose suffix matches decides; if its condition fails the word is
    /// returned unchanged (later rules are not tried). Suffix "*d" means "ends in a double consonant" and removes both.
    /// </summary>
    static string Apply(string w, ReadOnlySpan<Rule> rules)
    {
        foreach (var r in rules)
        {
            string stem;
            if (r.Suffix == "*d")
            {
                if (!EndsDoubleConsonant(w)) continue;
                stem = w[..^2];
            }
            else if (w.EndsWith(r.Suffix, StringComparison.Ordinal)) stem = w[..^r.Suffix.Length];
            else continue;
            return r.Condition is null || r.Condition(stem) ? stem + r.Replacement : w;
        }
        return w;
    }

    static string Step1a(string w)
    {
        if (w.EndsWith("ies", StringComparison.Ordinal) && w.Length == 4) return w[..^3] + "ie"; // dies → die
        return Apply(w, [new("sses", "ss", null), new("ies", "i", null), new("ss", "ss", null), new("s", "", null)]);
    }

    static string Step1b(string w)
    {
        if (w.EndsWith("ied", StringComparison.Ordinal)) return w[..^3] + (w.Length == 4 ? "ie" : "i"); // died → die, spied → spi
        if (w.EndsWith("eed", StringComparison.Ordinal))
            return PositiveMeasure(w[..^3]) ? w[..^3] + "ee" : w;

        string? stem = null;
        foreach (var suffix in new[] { "ed", "ing" })
            if (w.EndsWith(suffix, StringComparison.Ordinal) && ContainsVowel(w[..^suffix.Length]))
            {
                stem = w[..^suffix.Length];
                break;
            }
        if (stem is null) return w;

        char last = stem[^1];
        return Apply(stem,
        [
            new("at", "ate", null), new("bl", "ble", null), new("iz", "ize", null),
            new("*d", last.ToString(), _ => last is not ('l' or 's' or 'z')),
            new("", "e", s => Measure(s) == 1 && EndsCvc(s)),
        ]);
    }

    // NLTK: y → i only when preceded by a consonant that is not the whole stem (happy → happi, enjoy stays).
    static string Step1c(string w) => Apply(w, [new("y", "i", s => s.Length > 1 && IsConsonant(s, s.Length - 1))]);

    static string Step2(string w)
    {
        if (w.EndsWith("alli", StringComparison.Ordinal) && PositiveMeasure(w[..^4]))
            return Step2(w[..^4] + "al");
        Func<string, bool> p = PositiveMeasure;
        return Apply(w,
        [
            new("ational", "ate", p), new("tional", "tion", p), new("enci", "ence", p), new("anci", "ance", p),
            new("izer", "ize", p), new("bli", "ble", p), new("alli", "al", p), new("entli", "ent", p),
            new("eli", "e", p), new("ousli", "ous", p), new("ization", "ize", p), new("ation", "ate", p),
            new("ator", "ate", p), new("alism", "al", p), new("iveness", "ive", p), new("fulness", "ful", p),
            new("ousness", "ous", p), new("aliti", "al", p), new("iviti", "ive", p), new("biliti", "ble", p),
            new("fulli", "ful", p),
            // The 'l' of logi stays with the stem for the measure, so geo-logi works like archaeo-logi.
            new("logi", "log", _ => PositiveMeasure(w[..^3])),
        ]);
    }

    static string Step3(string w)
    {
        Func<string, bool> p = PositiveMeasure;
        return Apply(w,
        [
            new("icate", "ic", p), new("ative", "", p), new("alize", "al", p), new("iciti", "ic", p),
            new("ical", "ic", p), new("ful", "", p), new("ness", "", p),
        ]);
    }

    static string Step4(string w)
    {
        Func<string, bool> m = MeasureAbove1;
        return Apply(w,
        [
            new("al", "", m), new("ance", "", m), new("ence", "", m), new("er", "", m), new("ic", "", m),
            new("able", "", m), new("ible", "", m), new("ant", "", m), new("ement", "", m), new("ment", "", m),
            new("ent", "", m), new("ion", "", s => Measure(s) > 1 && s.Length > 0 && s[^1] is 's' or 't'),
            new("ou", "", m), new("ism", "", m), new("ate", "", m), new("iti", "", m), new("ous", "", m),
            new("ive", "", m), new("ize", "", m),
        ]);
    }

    // Both e-rules are tried here (unlike Apply): (m>1) E → ; (m=1 and not *o) E → .
    static string Step5a(string w)
    {
        if (!w.EndsWith('e')) return w;
        string stem = w[..^1];
        int m = Measure(stem);
        return m > 1 || (m == 1 && !EndsCvc(stem)) ? stem : w;
    }

    static string Step5b(string w) => Apply(w, [new("ll", "l", _ => Measure(w[..^1]) > 1)]);
}
