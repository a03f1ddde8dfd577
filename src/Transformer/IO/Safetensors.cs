using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Nanolora.Transformer;

/// <summary>One tensor read from a safetensors file, its data converted to float32 (row-major, <c>Shape</c> order).</summary>
public sealed record SafeTensor(string Name, string DType, int[] Shape, float[] Data);

/// <summary>
/// A tensor's header entry. <c>Begin</c>/<c>End</c> are byte offsets relative to the start of the data buffer
/// (after the 8-byte length and the JSON header); <c>ByteLength</c> = End - Begin.
/// </summary>
public sealed record SafetensorsEntry(string Name, string DType, int[] Shape, long ByteLength, long Begin, long End)
{
    /// <summary>Number of elements (the product of the shape).</summary>
    public long Numel => Safetensors.Numel(Shape);
}

/// <summary>
/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
/// N bytes of UTF-8 JSON mapping tensor names to {dtype, shape, data_offsets} plus an optional "__metadata__"
/// string-to-string map, then the data buffer. Writes F32 only; reads F32, F16 and BF16 as float32.
/// </summary>
public static class Safetensors
{
    /// <summary>The reference implementation refuses headers above 100 MB; so do we, before allocating.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    internal const string MetadataKey = "__metadata__";

    /// <summary>Bytes per element of every dtype the format names (sub-byte float types are not supported).</summary>
    internal static readonly IReadOnlyDictionary<string, int> DTypeSizes = new Dictionary<string, int>
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E5M2"] = 1, ["F8_E4M3"] = 1, ["F8_E8M0"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["F16"] = 2, ["BF16"] = 2,
        ["I32"] = 4, ["U32"] = 4, ["F32"] = 4,
        ["I64"] = 8, ["U64"] = 8, ["F64"] = 8,
    };

    /// <summary>
    /// Writes F32 tensors (or F16 with <paramref name="half"/>: round to nearest even, for frozen weights shipped at half
    /// the size), sorted by name (ordinal), header padded with spaces to a multiple of 8 bytes.
    /// Atomic: the file is written under a temporary name in the same directory and then moved over <paramref name="path"/>.
    /// </summary>
    public static void Write(string path, IEnumerable<(string Name, int[] Shape, float[] Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, bool half = false)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, data) in list)
        {
            if (string.IsNullOrEmpty(name) || name == MetadataKey)
                throw new ArgumentException($"invalid tensor name '{name}'");
            if (!seen.Add(name)) throw new ArgumentException($"duplicate tensor name '{name}'");
            ArgumentNullException.ThrowIfNull(shape);
            ArgumentNullException.ThrowIfNull(data);
            if (shape.Any(d => d < 0)) throw new ArgumentException($"tensor '{name}': negative dimension in [{string.Join(", ", shape)}]");
            long numel = Numel(shape);
            if (numel != data.Length)
                throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] has {numel} elements, data has {data.Length}");
            if (half && data.Any(v => float.IsFinite(v) && !float.IsFinite((float)(Half)v)))
                throw new ArgumentException($"tensor '{name}': a value beyond float16's range (±65504) cannot be written as F16");
        }

        byte[] header = BuildHeader(list, metadata, half);
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                fs.Write(len);
                fs.Write(header);
                var chunk = new byte[1 << 16];
                foreach (var (_, _, data) in list)
                    if (half) WriteHalves(fs, data, chunk); else WriteFloats(fs, data, chunk);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    static byte[] BuildHeader(List<(string Name, int[] Shape, float[] Data)> list, IReadOnlyDictionary<string, string>? metadata, bool half)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject(MetadataKey);
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, shape, data) in list)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", half ? "F16" : "F32");
                w.WriteStartArray("shape");
                foreach (int d in shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += (half ? 2L : 4L) * data.Length;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        int n = (int)ms.Length, padded = (n + 7) / 8 * 8;
        var bytes = new byte[padded];
        ms.GetBuffer().AsSpan(0, n).CopyTo(bytes);
        bytes.AsSpan(n).Fill((byte)' ');
        return bytes;
    }

    static void WriteHalves(Stream s, float[] data, byte[] chunk)
    {
        int per = chunk.Length / 2;
        for (int i = 0; i < data.Length; i += per)
        {
            int n = Math.Min(per, data.Length - i);
            for (int j = 0; j < n; j++) BinaryPrimitives.WriteHalfLittleEndian(chunk.AsSpan(2 * j), (Half)data[i + j]);
            s.Write(chunk, 0, 2 * n);
        }
    }

    static void WriteFloats(Stream s, float[] data, byte[] chunk)
    {
        int per = chunk.Length / 4;
        for (int i = 0; i < data.Length; i += per)
        {
            int n = Math.Min(per, data.Length - i);
            var src = data.AsSpan(i, n);
            if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(src).CopyTo(chunk);
            else for (int j = 0; j < n; j++) BinaryPrimitives.WriteSingleLittleEndian(chunk.AsSpan(4 * j), src[j]);
            s.Write(chunk, 0, 4 * n);
        }
    }

    /// <summary>Reads and validates the header (every entry, offsets contiguous and covering the buffer); data is read on demand.</summary>
    public static SafetensorsFile Read(string path)
    {
        if (Directory.Exists(path)) throw Bad(path, "is a directory, expected a .safetensors file");
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"safetensors file '{path}' does not exist.", path);
        // Checked before opening: a FIFO or device reports length 0, and opening one for reading would block.
        if (info.Length < 8) throw Bad(path, $"file is {info.Length} bytes, shorter than the 8-byte header length (or not a regular file)");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long fileLength = fs.Length;
        if (fileLength < 8) throw Bad(path, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> len = stackalloc byte[8];
        fs.ReadExactly(len);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (n > (ulong)(fileLength - 8))
            throw Bad(path, $"header length {n} runs past the end of the file ({fileLength - 8} bytes after the length prefix)");
        if (n > MaxHeaderBytes) throw Bad(path, $"header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        var header = new byte[(int)n];
        fs.ReadExactly(header);
        long dataStart = 8 + (long)n, dataLength = fileLength - dataStart;
        var (entries, metadata) = ParseHeader(path, header, dataLength);
        return new SafetensorsFile(path, dataStart, dataLength, fileLength, entries, metadata);
    }

    static (List<SafetensorsEntry>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            string text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header);
            if (!text.StartsWith('{')) throw Bad(path, "header does not start with '{'");
            doc = JsonDocument.Parse(text);
        }
        catch (DecoderFallbackException e) { throw Bad(path, $"header is not valid UTF-8 ({e.Message})"); }
        catch (JsonException e) { throw Bad(path, $"header is not valid JSON ({e.Message})"); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "header JSON is not an object");
            var entries = new List<SafetensorsEntry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var names = new HashSet<string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            try
            {
                foreach (var prop in doc.RootElement.EnumerateObject())
                {
                    if (prop.Name == MetadataKey)
                    {
                        if (sawMetadata) throw Bad(path, "duplicate \"__metadata__\"");
                        sawMetadata = true;
                        if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad(path, "\"__metadata__\" is not an object");
                        foreach (var kv in prop.Value.EnumerateObject())
                        {
                            if (kv.Value.ValueKind != JsonValueKind.String)
                                throw Bad(path, $"metadata value for '{kv.Name}' is {kv.Value.ValueKind}, not a string");
                            if (!metadata.TryAdd(kv.Name, kv.Value.GetString()!)) throw Bad(path, $"duplicate metadata key '{kv.Name}'");
                        }
                        continue;
                    }
                    if (!names.Add(prop.Name)) throw Bad(path, $"duplicate tensor name '{prop.Name}'");
                    entries.Add(ParseEntry(path, prop.Name, prop.Value));
                }
            }
            // A name escaping half a surrogate pair (\ud800) is valid JSON but no string; .NET refuses to decode it.
            catch (InvalidOperationException e) { throw Bad(path, $"header holds a name or value that is not valid text ({e.Message})"); }
            CheckLayout(path, entries, dataLength);
            return (entries, metadata);
        }
    }

    static SafetensorsEntry ParseEntry(string path, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Bad(path, $"tensor '{name}': entry is {e.ValueKind}, not an object");
        // JSON allows a key twice and TryGetProperty would pick one silently; the reference parser refuses, so do we.
        var fields = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in e.EnumerateObject())
            if (!fields.Add(field.Name)) throw Bad(path, $"tensor '{name}': field \"{field.Name}\" appears twice");
        if (!e.TryGetProperty("dtype", out var dt)) throw Bad(path, $"tensor '{name}': missing field \"dtype\"");
        if (!e.TryGetProperty("shape", out var sh)) throw Bad(path, $"tensor '{name}': missing field \"shape\"");
        if (!e.TryGetProperty("data_offsets", out var off)) throw Bad(path, $"tensor '{name}': missing field \"data_offsets\"");
        if (dt.ValueKind != JsonValueKind.String) throw Bad(path, $"tensor '{name}': \"dtype\" is not a string");
        string dtype = dt.GetString()!;
        if (!DTypeSizes.TryGetValue(dtype, out int size)) throw Bad(path, $"tensor '{name}': unknown dtype '{dtype}'");
        if (sh.ValueKind != JsonValueKind.Array) throw Bad(path, $"tensor '{name}': \"shape\" is not an array");
        var shape = new int[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v))
                throw Bad(path, $"tensor '{name}': shape entry {i} is not an integer");
            if (v < 0) throw Bad(path, $"tensor '{name}': negative dimension {v} at shape index {i}");
            if (v > int.MaxValue) throw Bad(path, $"tensor '{name}': dimension {v} at shape index {i} is too large");
            shape[i++] = (int)v;
        }
        if (off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad(path, $"tensor '{name}': \"data_offsets\" is not a [begin, end] pair");
        long begin = Offset(path, name, off[0]), end = Offset(path, name, off[1]);
        if (end < begin) throw Bad(path, $"tensor '{name}': data_offsets end {end} is before begin {begin}");
        long numel = NumelChecked(shape) ?? throw Bad(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        long expected = numel > long.MaxValue / size ? -1 : numel * size;
        if (expected != end - begin)
            throw Bad(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {numel} x {size} bytes, data_offsets span {end - begin}");
        return new SafetensorsEntry(name, dtype, shape, end - begin, begin, end);
    }

    static long Offset(string path, string name, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long x) && x >= 0
            ? x : throw Bad(path, $"tensor '{name}': data_offsets entry {v.GetRawText()} is not a non-negative integer");

    /// <summary>As the reference does: sorted by offsets, tensors must tile the buffer exactly, no gaps or overlaps.</summary>
    static void CheckLayout(string path, List<SafetensorsEntry> entries, long dataLength)
    {
        long at = 0;
        foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (e.Begin < at) throw Bad(path, $"tensor '{e.Name}': data_offsets [{e.Begin}, {e.End}] overlap the previous tensor (ending at {at})");
            if (e.Begin > at) throw Bad(path, $"tensor '{e.Name}': gap in the data buffer: previous tensor ends at {at}, this one begins at {e.Begin}");
            if (e.End > dataLength) throw Bad(path, $"tensor '{e.Name}': data_offsets end {e.End} is past the data buffer ({dataLength} bytes)");
            at = e.End;
        }
        if (at != dataLength) throw Bad(path, $"tensors cover {at} bytes but the data buffer has {dataLength}");
    }

    internal static long Numel(int[] shape) => NumelChecked(shape) ?? throw new ArgumentException("shape too large");

    static long? NumelChecked(int[] shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d == 0) return 0;
            if (n > long.MaxValue / d) return null;
            n *= d;
        }
        return n;
    }

    internal static InvalidDataException Bad(string path, string problem) => new($"safetensors file '{path}': {problem}");
}

/// <summary>A validated safetensors header; tensor data is read from the file when asked for.</summary>
public sealed class SafetensorsFile
{
    readonly string path;
    readonly long dataStart, dataLength, fileLength;
    readonly Dictionary<string, SafetensorsEntry> byName;

    internal SafetensorsFile(string path, long dataStart, long dataLength, long fileLength,
        List<SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        this.path = path;
        this.dataStart = dataStart;
        this.dataLength = dataLength;
        this.fileLength = fileLength;
        Entries = entries;
        Metadata = metadata;
        byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>The header's <c>__metadata__</c> string pairs (empty when there is none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Entries in header order, every dtype included (non-float ones too, with their byte sizes).</summary>
    public IReadOnlyList<SafetensorsEntry> Entries { get; }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => byName.ContainsKey(name);

    /// <summary>The header entry of a tensor; throws <see cref="KeyNotFoundException"/> when there is none.</summary>
    public SafetensorsEntry Entry(string name) =>
        byName.TryGetValue(name, out var e) ? e : throw new KeyNotFoundException($"safetensors file '{path}' has no tensor '{name}'");

    /// <summary>
    /// The tensor's elements as float32. F32 is copied, F16 and BF16 widened, F64 and I32 converted (F64 rounded to the
    /// nearest float; I32 exact up to 2^24); other dtypes are refused with the tensor's name.
    /// </summary>
    public float[] ReadFloats(string name)
    {
        var e = Entry(name);
        if (e.DType is "F64" or "I32") return ReadConverted(e);
        if (e.DType is not ("F32" or "F16" or "BF16"))
            throw new InvalidDataException($"safetensors file '{path}': tensor '{name}' has dtype {e.DType}; only F32, F16, BF16, F64 and I32 can be read as floats");
        if (e.Numel > Array.MaxLength) throw new NotSupportedException($"tensor '{name}' has {e.Numel} elements, too many for one array");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (fs.Length != fileLength) throw Safetensors.Bad(path, $"file changed size since it was opened ({fileLength} -> {fs.Length} bytes)");
        fs.Position = dataStart + e.Begin;
        var result = new float[e.Numel];
        var chunk = new byte[1 << 16];
        int size = e.DType == "F32" ? 4 : 2, per = chunk.Length / size;
        for (int i = 0; i < result.Length; i += per)
        {
            int n = Math.Min(per, result.Length - i);
            var bytes = chunk.AsSpan(0, n * size);
            fs.ReadExactly(bytes);
            var dst = result.AsSpan(i, n);
            switch (e.DType)
            {
                case "F32" when BitConverter.IsLittleEndian:
                    MemoryMarshal.Cast<byte, float>(bytes).CopyTo(dst);
                    break;
                case "F32":
                    for (int j = 0; j < n; j++) dst[j] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * j)..]);
                    break;
                case "F16" when BitConverter.IsLittleEndian:
                    TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(bytes), dst);
                    break;
                case "F16":
                    for (int j = 0; j < n; j++) dst[j] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(2 * j)..]);
                    break;
                default: // BF16 is the top half of a float32's bits.
                    for (int j = 0; j < n; j++)
                        dst[j] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * j)..]) << 16);
                    break;
            }
        }
        return result;
    }

    float[] ReadConverted(SafetensorsEntry e)
    {
        if (e.Numel > Array.MaxLength) throw new NotSupportedException($"tensor '{e.Name}' has {e.Numel} elements, too many for one array");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (fs.Length != fileLength) throw Safetensors.Bad(path, $"file changed size since it was opened ({fileLength} -> {fs.Length} bytes)");
        fs.Position = dataStart + e.Begin;
        var result = new float[e.Numel];
        int size = e.DType == "F64" ? 8 : 4;
        var chunk = new byte[size * 8192];
        for (int i = 0; i < result.Length; i += 8192)
        {
            int n = Math.Min(8192, result.Length - i);
            var bytes = chunk.AsSpan(0, n * size);
            fs.ReadExactly(bytes);
            for (int j = 0; j < n; j++)
                result[i + j] = size == 8 ? (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * j)..]) : BinaryPrimitives.ReadInt32LittleEndian(bytes[(4 * j)..]);
        }
        return result;
    }

    /// <summary>Reads one tensor's data, converted to float32.</summary>
    public SafeTensor ReadTensor(string name)
    {
        var e = Entry(name);
        return new SafeTensor(e.Name, e.DType, (int[])e.Shape.Clone(), ReadFloats(name));
    }

    /// <summary>Size of the data buffer in bytes (the file less the length prefix and header).</summary>
    public long DataLength => dataLength;
}
