using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Nanolora.Bench;

/// <summary>
/// A BenchmarkDotNet column of work per second: <paramref name="work"/>(case) divided by the mean time.
/// The mean is in ns, so work/ns reads directly as 10^9 units per second (GFLOP/s, GB/s).
/// </summary>
sealed class RateColumn(string id, string name, string legend, Func<BenchmarkCase, double> work) : IColumn
{
    public string Id => id;
    public string ColumnName => name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => legend;
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        return stats == null ? "-" : (work(benchmarkCase) / stats.Mean).ToString("F1");
    }
}
