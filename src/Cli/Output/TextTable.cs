using System.Text;
using Spectre.Console;

namespace Nanolora.Cli.Output;

/// <summary>A column of a <see cref="TextTable"/>: its header, and whether its cells (numbers) align right.</summary>
/// <param name="Header">The column's header text.</param>
/// <param name="AlignRight">True for numbers, so that digits line up.</param>
public sealed record TextColumn(string Header, bool AlignRight = false);

/// <summary>
/// A result table that renders two ways: a Spectre.Console table on a terminal, and plain rows in a pipe or file. Plain rows
/// are never wrapped or cut (a tensor name stays whole for grep, a number on one line), whatever the width, because a pipe
/// has no width: Spectre.Console assumes 80 columns there, and squeezing to 80 split names mid-word.
/// </summary>
public sealed class TextTable
{
    /// <summary>What a cell shows when its value was not measured (rather than a misleading 0).</summary>
    public const string NotMeasured = "—";

    readonly List<string[]> _rows = new();

    /// <summary>A table with these columns, in order.</summary>
    public TextTable(params TextColumn[] columns)
    {
        if (columns.Length == 0) throw new ArgumentException("A table needs at least one column.", nameof(columns));
        Columns = columns;
    }

    /// <summary>The columns, in order.</summary>
    public IReadOnlyList<TextColumn> Columns { get; }

    /// <summary>The rows added so far, one cell per column.</summary>
    public IReadOnlyList<string[]> Rows => _rows;

    /// <summary>Adds a row; a null cell is shown as <see cref="NotMeasured"/>.</summary>
    public TextTable AddRow(params string?[] cells)
    {
        if (cells.Length != Columns.Count) throw new ArgumentException($"A row of {cells.Length} cells in a table of {Columns.Count} columns.", nameof(cells));
        _rows.Add(cells.Select(c => c ?? NotMeasured).ToArray());
        return this;
    }

    /// <summary>
    /// Header and rows as lines of text: columns padded to their widest cell and two spaces apart, numbers right-aligned,
    /// no borders, no trailing spaces. One row is one line (line breaks inside a cell become spaces).
    /// </summary>
    public string ToPlainText()
    {
        var cells = new List<string[]> { Columns.Select(c => c.Header).ToArray() };
        cells.AddRange(_rows.Select(r => r.Select(c => c.ReplaceLineEndings(" ")).ToArray()));
        var widths = Enumerable.Range(0, Columns.Count).Select(i => cells.Max(r => r[i].Length)).ToArray();
        var sb = new StringBuilder();
        var line = new StringBuilder();
        foreach (var row in cells)
        {
            line.Clear();
            for (int i = 0; i < row.Length; i++)
            {
                if (i > 0) line.Append("  ");
                bool last = i == row.Length - 1;
                if (Columns[i].AlignRight) line.Append(row[i].PadLeft(widths[i]));
                else line.Append(last ? row[i] : row[i].PadRight(widths[i]));
            }
            sb.Append(line.ToString().TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The table as a Spectre.Console renderable (for a terminal).</summary>
    public Table ToSpectre()
    {
        var table = new Table();
        foreach (var c in Columns)
        {
            var column = new TableColumn(Markup.Escape(c.Header));
            if (c.AlignRight) column.RightAligned();
            table.AddColumn(column);
        }
        foreach (var row in _rows) table.AddRow(row.Select(Markup.Escape).ToArray());
        return table;
    }
}
