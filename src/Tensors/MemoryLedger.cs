namespace Nanolora.Tensors;

/// <summary>What a buffer holds; the ledger keeps live and peak bytes per category.</summary>
public enum MemoryCategory
{
    /// <summary>Model weights, frozen or trainable.</summary>
    Parameter,
    /// <summary>Gradients of trainable parameters.</summary>
    Gradient,
    /// <summary>Optimizer moments (AdamW's m and v).</summary>
    OptimizerState,
    /// <summary>Intermediate results of the forward and backward passes (the default for new tensors).</summary>
    Activation,
    /// <summary>Anything else.</summary>
    Other,
}

/// <summary>Element type. Ops compute in float32; bfloat16 is a storage form for frozen weights (see <see cref="Tensor.ToBFloat16"/>).</summary>
public enum DType
{
    /// <summary>IEEE 754 single precision, 4 bytes per element.</summary>
    Float32,
    /// <summary>bfloat16 (float32's upper 16 bits: 8 exponent bits, 7 mantissa bits), 2 bytes per element; widened exactly to float32 where read.</summary>
    BFloat16,
}

/// <summary>
/// A point-in-time reading of a device's ledger. <see cref="PeakByCategory"/> holds each category's own maximum (they
/// need not coincide); <see cref="AtPeakByCategory"/> is what was live when the total peaked, so it sums to <see cref="PeakBytes"/>.
/// </summary>
public sealed record LedgerSnapshot(long LiveBytes, long PeakBytes, IReadOnlyDictionary<MemoryCategory, long> LiveByCategory,
    IReadOnlyDictionary<MemoryCategory, long> PeakByCategory, long ReservedBytes, long PeakReservedBytes = 0,
    IReadOnlyDictionary<MemoryCategory, long>? AtPeakByCategory = null);

/// <summary>
/// Per-device accounting of tensor bytes: live and peak, overall and by category.
/// Counts the bytes tensors asked for (not the pool's rounding), so numbers match what a model needs;
/// the pool's own reservation is reported separately as <see cref="ReservedBytes"/>.
/// </summary>
public sealed class MemoryLedger
{
    static readonly int Categories = Enum.GetValues<MemoryCategory>().Length;
    readonly long[] _live = new long[Categories];
    readonly long[] _peak = new long[Categories];
    readonly long[] _atPeak = new long[Categories];   // the categories' live bytes when the total last peaked
    readonly object _gate = new();
    long _liveTotal, _peakTotal;

    /// <summary>Bytes of all live tensors on the device.</summary>
    public long LiveBytes { get { lock (_gate) return _liveTotal; } }
    /// <summary>The most <see cref="LiveBytes"/> since the last <see cref="ResetPeaks"/>.</summary>
    public long PeakBytes { get { lock (_gate) return _peakTotal; } }
    /// <summary>Bytes held by the device's caching pool (live plus cached free buffers): what the device really gave up.</summary>
    public long ReservedBytes { get; private set; }
    /// <summary>The most <see cref="ReservedBytes"/> since the last <see cref="ResetPeaks"/>.</summary>
    public long PeakReservedBytes { get; private set; }

    internal void SetReserved(long bytes)
    {
        lock (_gate)
        {
            ReservedBytes = bytes;
            if (bytes > PeakReservedBytes) PeakReservedBytes = bytes;
        }
    }

    /// <summary>Bytes of live tensors in category <paramref name="c"/>.</summary>
    public long Live(MemoryCategory c) { lock (_gate) return _live[(int)c]; }
    /// <summary>The most live bytes in category <paramref name="c"/> since the last <see cref="ResetPeaks"/>.</summary>
    public long Peak(MemoryCategory c) { lock (_gate) return _peak[(int)c]; }

    internal void Add(MemoryCategory c, long bytes)
    {
        lock (_gate)
        {
            _live[(int)c] += bytes;
            _liveTotal += bytes;
            if (_live[(int)c] > _peak[(int)c]) _peak[(int)c] = _live[(int)c];
            if (_liveTotal > _peakTotal)
            {
                _peakTotal = _liveTotal;
                Array.Copy(_live, _atPeak, Categories);
            }
        }
    }

    internal void Remove(MemoryCategory c, long bytes)
    {
        lock (_gate)
        {
            _live[(int)c] -= bytes;
            _liveTotal -= bytes;
        }
    }

    /// <summary>Peaks restart from the current live values (like torch.cuda.reset_peak_memory_stats).</summary>
    public void ResetPeaks()
    {
        lock (_gate)
        {
            Array.Copy(_live, _peak, Categories);
            Array.Copy(_live, _atPeak, Categories);
            _peakTotal = _liveTotal;
            PeakReservedBytes = ReservedBytes;
        }
    }

    /// <summary>A consistent copy of every counter, taken under the ledger's lock.</summary>
    public LedgerSnapshot Snapshot()
    {
        lock (_gate)
        {
            var live = new Dictionary<MemoryCategory, long>();
            var peak = new Dictionary<MemoryCategory, long>();
            var atPeak = new Dictionary<MemoryCategory, long>();
            foreach (var c in Enum.GetValues<MemoryCategory>()) { live[c] = _live[(int)c]; peak[c] = _peak[(int)c]; atPeak[c] = _atPeak[(int)c]; }
            return new LedgerSnapshot(_liveTotal, _peakTotal, live, peak, ReservedBytes, PeakReservedBytes, atPeak);
        }
    }
}
