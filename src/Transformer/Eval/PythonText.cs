using System.Text;

namespace Nanolora.Transformer;

/// <summary>
/// The few Python string operations sacrebleu's chrF and BLEU are defined by, with Python's semantics, so scores
/// agree with sacrebleu on any text and not just ASCII: <c>str.split()</c> (Python's whitespace set is .NET's plus
/// the four ASCII separators U+001C..U+001F), <c>str.rstrip()</c>, and indexing by code point (a character
/// n-gram never splits a surrogate pair, as Python's str never holds one).
/// </summary>
internal static class PythonText
{
    /// <summary>Python's str.isspace for one UTF-16 unit (every Python whitespace character is in the BMP).</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001c' and <= '\u001f';

    /// <summary>Python's <c>s.split()</c>: runs of whitespace separate, no empty pieces.</summary>
    public static List<string> Split(string s)
    {
        var parts = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            while (i < s.Length && IsSpace(s[i])) i++;
            int start = i;
            while (i < s.Length && !IsSpace(s[i])) i++;
            if (i > start) parts.Add(s[start..i]);
        }
        return parts;
    }

    /// <summary>Python's <c>s.rstrip()</c>.</summary>
    public static string RStrip(string s)
    {
        int end = s.Length;
        while (end > 0 && IsSpace(s[end - 1])) end--;
        return s[..end];
    }

    /// <summary>Python's <c>''.join(s.split())</c>: every whitespace character removed.</summary>
    public static string RemoveSpaces(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (char c in s) if (!IsSpace(c)) sb.Append(c);
        return sb.ToString();
    }

    /// <summary>
    /// Start offsets of each code point in <paramref name="s"/>, plus s.Length at the end, so code points
    /// [i, i + n) are s[starts[i]..starts[i + n]]. A lone surrogate counts as one code point (a Python str can
    /// hold one too).
    /// </summary>
    public static int[] CodePointStarts(string s)
    {
        var starts = new List<int>(s.Length + 1);
        for (int i = 0; i < s.Length; i++)
        {
            starts.Add(i);
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
        }
        starts.Add(s.Length);
        return [.. starts];
    }
}
