using System.Diagnostics;
using System.Text;
using Nanolora.Tests.Cli;
using Nanolora.Transformer;

namespace Nanolora.Tests.Faults;

/// <summary>Every bad input is one clear error: config metadata, safetensors headers, files that are not files, command lines.</summary>
public class BadInputTests
{
    static string WithConfig(string json)
    {
        var dir = TinyRun.NewDirectory();
        Safetensors.Write(Path.Combine(dir, Checkpoint.WeightsFile), [("w", [1], [0f])], new Dictionary<string, string> { ["config"] = json });
        return dir;
    }

    [Theory]
    [InlineData("""{"Heads":0}""", "Heads is 0")]
    [InlineData("""{"Heads":-4}""", "Heads is -4")]
    [InlineData("""{"DModel":100,"Heads":3}""", "divisible")]
    [InlineData("""{"MaxPositions":2147483647}""", "MaxPositions is 2147483647")]
    [InlineData("""{"EncoderLayers":0}""", "EncoderLayers is 0")]
    [InlineData("""{"Dropout":1.5}""", "Dropout is 1.5")]
    [InlineData("""{"Heads":"four"}""", "$.Heads")]
    [InlineData("""[1,2]""", "does not parse")]
    [InlineData("""null""", "is null")]
    public void CheckpointConfigMetadataIsValidatedField(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.ReadConfig(WithConfig(json)));
        Assert.Contains(expected, e.Message);
        Assert.Contains(Checkpoint.WeightsFile, e.Message);
    }

    static string HandBuilt(string header, byte[] data)
    {
        var path = Path.Combine(TinyRun.NewDirectory(), "t.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)h.Length), .. h, .. data]);
        return path;
    }

    [Fact]
    public void HeaderWithALoneSurrogateOrADuplicateFieldIsRefused()
    {
        var e = Assert.Throws<InvalidDataException>(() => Safetensors.Read(HandBuilt("""{"\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[4])));
        Assert.Contains("not valid text", e.Message);
        e = Assert.Throws<InvalidDataException>(() => Safetensors.Read(HandBuilt("""{"a":{"dtype":"F32","shape":[1],"shape":[2],"data_offsets":[0,4]}}""", new byte[4])));
        Assert.Contains("field \"shape\" appears twice", e.Message);
    }

    [Fact]
    public void I32AndF64TensorsAreConverted()
    {
        var data = new List<byte>();
        foreach (double d in new[] { 0.1, -2.5, 1e300 }) data.AddRange(BitConverter.GetBytes(d));
        foreach (int i in new[] { 7, -16_777_216 }) data.AddRange(BitConverter.GetBytes(i));
        var f = Safetensors.Read(HandBuilt("""{"d":{"dtype":"F64","shape":[3],"data_offsets":[0,24]},"i":{"dtype":"I32","shape":[2],"data_offsets":[24,32]}}""", [.. data]));
        Assert.Equal([0.1f, -2.5f, float.PositiveInfinity], f.ReadFloats("d"));
        Assert.Equal([7f, -16_777_216f], f.ReadFloats("i"));
    }

    [Fact]
    public async Task ADirectoryOrAFifoGivenAsAFileIsOneClearError()
    {
        var dir = TinyRun.NewDirectory();
        var e = Assert.Throws<InvalidDataException>(() => Safetensors.Read(dir));
        Assert.Contains("is a directory", e.Message);
        if (!OperatingSystem.IsLinux()) return;
        var fifo = Path.Combine(dir, "pipe.safetensors");
        using (var mk = Process.Start("mkfifo", fifo)) mk.WaitForExit();
        // Opening a FIFO blocks until a writer comes; the reader must refuse it without opening it.
        var read = Task.Run(() => Assert.Throws<InvalidDataException>(() => Safetensors.Read(fifo)));
        Assert.True(await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(20))) == read, "reading a FIFO blocked");
        Assert.Contains("not a regular file", (await read).Message);
    }

    [Fact]
    public void RougeLcsOfLongLinesUsesLinearMemory()
    {
        var rng = new Random(3);
        string Line(int n) => string.Join(' ', Enumerable.Range(0, n).Select(_ => "w" + rng.Next(50)));
        string a = Line(10_000), b = Line(10_000);
        Rouge.Score("x", "y"); // JIT and statics first, so the measurement sees only the scoring
        long before = GC.GetAllocatedBytesForCurrentThread();
        var score = Rouge.Score(a, b);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 50_000_000, $"{allocated:N0} bytes allocated; a 10k × 10k table alone is 400 MB");
        Assert.InRange(score.RougeL.F, 0.1, 1.0);
        Assert.Equal(score.RougeL.F, score.RougeLsum.F, 12); // one sentence each: the summary-level LCS is the LCS
    }

    [Fact]
    public void LinearMemoryLcsHasTheTableLength()
    {
        var rng = new Random(11);
        for (int trial = 0; trial < 200; trial++)
        {
            var a = Enumerable.Range(0, rng.Next(0, 40)).Select(_ => "t" + rng.Next(6)).ToArray();
            var b = Enumerable.Range(0, rng.Next(0, 40)).Select(_ => "t" + rng.Next(6)).ToArray();
            var table = Rouge.LcsIndices(a, b);
            var linear = Rouge.LcsIndices(a, b, maxTableCells: 0);
            Assert.True(table.Count == linear.Count, $"trial {trial}: table LCS {table.Count}, linear {linear.Count}");
            // The linear one is a common subsequence: ascending indices into a whose tokens appear in b in order.
            int j = 0;
            for (int k = 0; k < linear.Count; k++)
            {
                Assert.True(k == 0 || linear[k] > linear[k - 1], $"trial {trial}: indices not ascending");
                while (j < b.Length && b[j] != a[linear[k]]) j++;
                Assert.True(j < b.Length, $"trial {trial}: token {k} ('{a[linear[k]]}') not found in order in b");
                j++;
            }
        }
    }

    static readonly string Out = Path.Combine(Path.GetTempPath(), "nanolora-fault-out-never-written");

    public static TheoryData<string[], string> BadCommandLines() => new()
    {
        { ["train", "--steps", "0", "--out", Out], "--steps is 0" },
        { ["train", "--steps", "-5", "--out", Out], "--steps is -5" },
        { ["train", "--checkpoint-every", "-5", "--out", Out], "--checkpoint-every is -5" },
        { ["train", "--batch-size", "0", "--out", Out], "--batch-size is 0" },
        { ["finetune", "--train-examples", "0", "--out", Out], "--train-examples is 0" },
        { ["finetune", "--train-examples", "-1", "--out", Out], "--train-examples is -1" },
        { ["finetune", "--warmup", "-5", "--out", Out], "--warmup is -5" },
        { ["finetune", "--lr", "0", "--out", Out], "--lr is 0" },
        { ["finetune", "--lr", "-1", "--out", Out], "--lr is -1" },
        { ["finetune", "--alpha", "NaN", "--out", Out], "--alpha is NaN" },
        { ["finetune", "--alpha", "1e30", "--out", Out], "--alpha is 1E+30" },
        { ["finetune", "--max-loss-ratio", "0.5", "--out", Out], "--max-loss-ratio is 0.5" },
        { ["finetune", "--dropout", "-0.1", "--out", Out], "--dropout is -0.1" },
        { ["pretrain", "--gap-examples", "-1", "--init", "minilm", "--out", Out], "--gap-examples is -1" },
        { ["pretrain", "--gap-examples", "100", "--out", Out], "--gap-examples applies only to --init minilm or a BERT folder" },
        { ["pretrain", "--init", "no-such-bert-folder", "--out", Out], "--init: 'no-such-bert-folder' is neither none, minilm nor a folder" },
        { ["pretrain", "--init", Path.GetTempPath(), "--out", Out], "no config.json" },
        { ["pretrain", "--init", "minilm", "--decoder-layers", "7", "--out", Out], "--decoder-layers is 7; all-MiniLM-L6-v2 has 6 layers" },
        { ["eval", "--beam", "0"], "--beam is 0" },
        { ["eval", "--beam", "-2"], "--beam is -2" },
        { ["eval", "--beam", "10000"], "--beam is 10000" },
        { ["eval", "--limit", "-1"], "--limit is -1" },
        { ["eval", "--no-repeat-ngram", "-1"], "--no-repeat-ngram is -1" },
        { ["generate", "--max-length", "0", "--text", "x"], "--max-length is 0" },
        { ["inspect", Path.GetTempPath()], "is a directory" },
        { ["rouge", Path.GetTempPath(), "x"], "is a directory" },
        { ["eval", "--model", Path.GetTempPath()], "No model.safetensors" },
    };

    [Theory]
    [MemberData(nameof(BadCommandLines))]
    public void ABadCommandLineIsOneErrorLineAndExitCodeOne(string[] args, string expected)
    {
        // --device only exists where something is computed.
        string[] device = args[0] is "inspect" or "rouge" or "params" or "devices" ? [] : ["--device", "cpu"];
        var (code, output, err) = CliTests.Run([.. args, .. device]);
        Assert.Equal(1, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one error line, got:\n{err}{output}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", err + output);
        Assert.False(Directory.Exists(Out), "nothing was written");
    }

    [Fact]
    public void CommandsRefuseToReplaceAModelWithoutOverwrite()
    {
        var dir = TinyRun.NewDirectory();
        File.Copy(Path.Combine(CliTests.ShippedBase(), Checkpoint.WeightsFile), Path.Combine(dir, Checkpoint.WeightsFile));
        var (code, _, err) = CliTests.Run("finetune", "--method", "full", "--base", CliTests.ShippedBase(), "--out", dir, "--steps", "1", "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("--overwrite", err);
        (code, _, err) = CliTests.Run("pretrain", "--out", dir, "--steps", "1", "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("already holds model.safetensors", err);
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", dir, "--out", CliTests.ShippedBase(), "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("is the --model folder", err);
    }
}
