using System.Buffers.Binary;
using System.Text;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

public sealed class SafetensorsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nanolora-st-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string PathFor(string name) => Path.Combine(dir, name);

    /// <summary>Builds a file as another implementation would: u64 LE length, the JSON as given, the raw data bytes.</summary>
    string HandBuilt(string name, string json, byte[] data, bool pad = true)
    {
        var header = Encoding.UTF8.GetBytes(json);
        if (pad && header.Length % 8 != 0)
            header = [.. header, .. Enumerable.Repeat((byte)' ', 8 - header.Length % 8)];
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        string p = PathFor(name);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    [Fact]
    public void RoundTripPreservesTensorsMetadataAndSortsByName()
    {
        var a = Reference.Random(7 * 33, seed: 1);
        var b = Reference.Random(5, seed: 2);
        var empty = Array.Empty<float>();
        var scalar = new[] { float.NaN };
        string p = PathFor("rt.safetensors");
        Safetensors.Write(p, [("zeta.weight", [7, 33], a), ("alpha", [5], b), ("empty", [0, 4], empty), ("scalar", [], scalar)],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode ✓" });

        var f = Safetensors.Read(p);
        Assert.Equal(["alpha", "empty", "scalar", "zeta.weight"], f.Entries.Select(e => e.Name));
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal("ünïcode ✓", f.Metadata["note"]);
        Assert.Equal(a, f.ReadFloats("zeta.weight"));
        Assert.Equal(b, f.ReadFloats("alpha"));
        Assert.Empty(f.ReadFloats("empty"));
        Assert.True(float.IsNaN(f.ReadFloats("scalar")[0]));
        var z = f.ReadTensor("zeta.weight");
        Assert.Equal([7, 33], z.Shape);
        Assert.Equal("F32", z.DType);
        Assert.Equal(4L * 7 * 33, f.Entry("zeta.weight").ByteLength);

        // Header is padded with spaces to a multiple of 8, as the reference writer does.
        var bytes = File.ReadAllBytes(p);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, n % 8);
        Assert.Equal((long)(8 + n + 4 * (7 * 33 + 5 + 1)), bytes.Length);
        Assert.Equal((byte)'{', bytes[8]);
        Assert.DoesNotContain(Directory.GetFiles(dir), x => x.EndsWith(".tmp"));
    }

    [Fact]
    public void WriteOverwritesAtomicallyAndValidatesArguments()
    {
        string p = PathFor("over.safetensors");
        Safetensors.Write(p, [("x", [2], [1f, 2f])]);
        Safetensors.Write(p, [("y", [1], [3f])]);
        var f = Safetensors.Read(p);
        Assert.Equal(["y"], f.Entries.Select(e => e.Name));
        Assert.Empty(f.Metadata);
        Assert.Throws<ArgumentException>(() => Safetensors.Write(p, [("x", [3], [1f, 2f])]));
        Assert.Throws<ArgumentException>(() => Safetensors.Write(p, [("x", [1], [1f]), ("x", [1], [2f])]));
        Assert.Throws<ArgumentException>(() => Safetensors.Write(p, [("__metadata__", [1], [1f])]));
        Assert.Equal([3f], Safetensors.Read(p).ReadFloats("y")); // failed writes left the old file alone
        Assert.Single(Directory.GetFiles(dir));
    }

    [Fact]
    public void ReadsHandBuiltFileWithF16Bf16AndOtherDtypes()
    {
        // Data buffer, in offset order (not header order, to check offsets are honoured):
        //   bf16 [2,2] at [0, 8):   1.0=0x3F80, -1.5=0xBFC0, 3.140625=0x4049, 0 =0x0000
        //   f16  [3]   at [8, 14):  1.0=0x3C00, -2.0=0xC000, 65504=0x7BFF
        //   i64  [1]   at [14, 22): 42
        //   f32  [1]   at [22, 26): 0.1f
        var data = new List<byte>();
        foreach (ushort u in new ushort[] { 0x3F80, 0xBFC0, 0x4049, 0x0000, 0x3C00, 0xC000, 0x7BFF })
            data.AddRange(BitConverter.GetBytes(u)); // test machine is little-endian
        data.AddRange(BitConverter.GetBytes(42L));
        data.AddRange(BitConverter.GetBytes(0.1f));
        string json = """{"__metadata__":{"format":"pt","source":"hand"},"w.f32":{"dtype":"F32","shape":[1],"data_offsets":[22,26]},"h":{"dtype":"F16","shape":[3],"data_offsets":[8,14]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"steps":{"dtype":"I64","shape":[],"data_offsets":[14,22]}}""";
        var f = Safetensors.Read(HandBuilt("hand.safetensors", json, [.. data]));

        Assert.Equal(["w.f32", "h", "b", "steps"], f.Entries.Select(e => e.Name));
        Assert.Equal("hand", f.Metadata["source"]);
        Assert.Equal([1f, -1.5f, 3.140625f, 0f], f.ReadFloats("b"));
        Assert.Equal([1f, -2f, 65504f], f.ReadFloats("h"));
        Assert.Equal([0.1f], f.ReadFloats("w.f32"));
        var steps = f.Entry("steps");
        Assert.Equal(("I64", 8L, 14L, 22L), (steps.DType, steps.ByteLength, steps.Begin, steps.End));
        Assert.Empty(steps.Shape);
        var e = Assert.Throws<InvalidDataException>(() => f.ReadFloats("steps"));
        Assert.Contains("I64", e.Message);
        Assert.Throws<KeyNotFoundException>(() => f.ReadFloats("nope"));
    }

    [Fact]
    public void LargeTensorsSpanningSeveralReadChunksConvertExactly()
    {
        // 40,001 elements: more than one 64 KiB read chunk for every dtype, and not a multiple of any vector width.
        const int n = 40_001;
        var values = Reference.Random(n, seed: 3, lo: -300f, hi: 300f);
        var half = values.Select(v => (Half)v).ToArray();
        var bf16 = values.Select(v => (ushort)(BitConverter.SingleToInt32Bits(v) >>> 16)).ToArray(); // truncation
        var data = new List<byte>();
        foreach (var h in half) data.AddRange(BitConverter.GetBytes(h));
        foreach (var b in bf16) data.AddRange(BitConverter.GetBytes(b));
        foreach (var v in values) data.AddRange(BitConverter.GetBytes(v));
        string json = $$$"""{"h":{"dtype":"F16","shape":[{{{n}}}],"data_offsets":[0,{{{2 * n}}}]},"b":{"dtype":"BF16","shape":[1,{{{n}}}],"data_offsets":[{{{2 * n}}},{{{4 * n}}}]},"f":{"dtype":"F32","shape":[{{{n}}},1],"data_offsets":[{{{4 * n}}},{{{8 * n}}}]}}""";
        var f = Safetensors.Read(HandBuilt("large.safetensors", json, [.. data]));
        Assert.Equal(half.Select(h => (float)h), f.ReadFloats("h"));
        Assert.Equal(bf16.Select(b => BitConverter.Int32BitsToSingle(b << 16)), f.ReadFloats("b"));
        Assert.Equal(values, f.ReadFloats("f"));
    }

    [Fact]
    public void UnpaddedHeaderFromOtherWritersIsAccepted()
    {
        var p = HandBuilt("unpadded.safetensors", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", BitConverter.GetBytes(2.5f), pad: false);
        Assert.Equal([2.5f], Safetensors.Read(p).ReadFloats("x"));
    }

    const string X4 = """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""";

    public static IEnumerable<object[]> Malformed() => new (string Case, string Json, int DataBytes, string Expect)[]
    {
        ("invalid json", """{"x":{"dtype":"F32",""", 4, "not valid JSON"),
        ("not an object", "[1,2]", 0, "does not start with '{'"),
        ("missing dtype", """{"x":{"shape":[1],"data_offsets":[0,4]}}""", 4, "missing field \"dtype\""),
        ("missing shape", """{"x":{"dtype":"F32","data_offsets":[0,4]}}""", 4, "missing field \"shape\""),
        ("missing offsets", """{"x":{"dtype":"F32","shape":[1]}}""", 4, "missing field \"data_offsets\""),
        ("unknown dtype", """{"x":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}""", 4, "unknown dtype 'F31'"),
        ("size disagreement", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "needs 2 x 4 bytes"),
        ("f16 size disagreement", """{"x":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}""", 4, "needs 3 x 2 bytes"),
        ("negative dim", """{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4, "negative dimension"),
        ("fractional dim", """{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", 4, "not an integer"),
        ("huge dims", """{"x":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}""", 4, "too large"),
        ("end before begin", """{"x":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}""", 4, "before begin"),
        ("negative offset", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 4, "non-negative integer"),
        ("offsets not a pair", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}}""", 4, "[begin, end] pair"),
        ("out of range", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "past the data buffer"),
        ("overlap", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "overlap"),
        ("gap", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "gap"),
        ("trailing bytes", X4, 8, "cover 4 bytes but the data buffer has 8"),
        ("duplicate name", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "duplicate tensor name"),
        ("metadata not string", """{"__metadata__":{"k":1},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, "not a string"),
        ("entry not object", """{"x":3}""", 0, "not an object"),
    }.Select(c => new object[] { c.Case, c.Json, c.DataBytes, c.Expect });

    [Theory, MemberData(nameof(Malformed))]
    public void MalformedHeaderIsRejectedNamingTheProblem(string what, string json, int dataBytes, string expect)
    {
        var p = HandBuilt(what.Replace(' ', '_') + ".safetensors", json, new byte[dataBytes]);
        var e = Assert.Throws<InvalidDataException>(() => Safetensors.Read(p));
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void ShortFileAndOversizedHeaderLengthAreRejectedBeforeAllocating()
    {
        string shortFile = PathFor("short.safetensors");
        File.WriteAllBytes(shortFile, [1, 2, 3]);
        Assert.Contains("shorter than the 8-byte", Assert.Throws<InvalidDataException>(() => Safetensors.Read(shortFile)).Message);

        string empty = PathFor("empty.safetensors");
        File.WriteAllBytes(empty, []);
        Assert.Throws<InvalidDataException>(() => Safetensors.Read(empty));

        // A length of 2^62 would be a fatal allocation if trusted.
        string huge = PathFor("huge.safetensors");
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1UL << 62);
        File.WriteAllBytes(huge, bytes);
        Assert.Contains("past the end of the file", Assert.Throws<InvalidDataException>(() => Safetensors.Read(huge)).Message);

        string maxLen = PathFor("max.safetensors");
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue);
        File.WriteAllBytes(maxLen, bytes);
        Assert.Contains("past the end of the file", Assert.Throws<InvalidDataException>(() => Safetensors.Read(maxLen)).Message);
    }

    [Fact]
    public void InvalidUtf8HeaderIsRejected()
    {
        var p = PathFor("utf8.safetensors");
        var bytes = new byte[8 + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 8);
        new byte[] { (byte)'{', 0xFF, 0xFE, (byte)'}', 32, 32, 32, 32 }.CopyTo(bytes, 8);
        File.WriteAllBytes(p, bytes);
        Assert.Contains("UTF-8", Assert.Throws<InvalidDataException>(() => Safetensors.Read(p)).Message);
    }
}
