using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.DeviceRunner;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.DeviceRunner;

/// <summary>
/// The device runner (bench/DeviceRunner, what bench/device/run.sh runs on a lent GPU) is exercised here so that it
/// cannot rot between GPU loans: its checks run on cpu and, one per op family, on the kernels (ILGPU's simulator);
/// a device that disagrees with the cpu backend fails the run; hf-export writes files Nanolora reads back to the
/// same outputs. The Hugging Face side (bench/device/hf_check.py) needs transformers, which CI does not have.
/// </summary>
public class DeviceRunnerTests
{
    static readonly string[] Families =
        ["binary", "cross-entropy", "dropout", "embedding", "layernorm", "layout", "matmul", "model", "optimizer", "reduce", "softmax", "unary"];

    [Fact]
    public void Every_op_family_is_checked_and_passes_on_cpu()
    {
        var (passed, results) = CheckMode.RunAll(Device.Cpu, OpChecks.All(small: true), TextWriter.Null);
        Assert.True(passed, results.ToJsonString());
        Assert.Equal(Families, results["families"]!.AsObject().Select(kv => kv.Key));
        Assert.Equal(0, (int)results["checks_failed"]!);
    }

    [Fact]
    public void The_kernels_pass_one_check_of_each_family_on_the_simulator()
    {
        // The simulator is slow (the whole small set takes ~2 minutes there): the first check of each family, without
        // the whole-model ones, compiles and runs every family's kernels in seconds. tests/Tensors holds each kernel to
        // a double reference at many shapes; this holds the runner's plumbing to the kernels.
        var firsts = OpChecks.All(small: true).Where(c => c.Family != "model").GroupBy(c => c.Family).Select(g => g.First()).ToList();
        var (passed, results) = CheckMode.RunAll(Device.Get("ilgpu-cpu"), firsts, TextWriter.Null);
        Assert.True(passed, results.ToJsonString());
        Assert.Equal(Families.Length - 1, (int)results["checks_passed"]!);
    }

    [Fact]
    public void A_device_that_disagrees_fails_the_run_and_names_the_first_bad_element()
    {
        // The output differs by device (at index 2, beyond the tolerance), or the op throws on the device under test.
        var wrong = new OpCheck("fake", "differs at 2", p => [("y", p.Device.IsCpu ? [1f, 2f, 3f, 4f] : new[] { 1f, 2f, 3.01f, 4f })]);
        var throws = new OpCheck("fake", "throws", p => p.Device.IsCpu ? [("y", new[] { 1f })] : throw new InvalidOperationException("kernel rejected"));
        var fine = new OpCheck("fake", "agrees", p => [("y", new[] { 1f, float.NaN, float.PositiveInfinity })]);
        var (passed, results) = CheckMode.RunAll(Device.Get("ilgpu-cpu"), [wrong, throws, fine], TextWriter.Null);
        Assert.False(passed);
        var checks = results["checks"]!.AsArray().Select(c => c!.AsObject()).ToList();
        Assert.Equal([false, false, true], checks.Select(c => (bool)c["passed"]!));
        Assert.Equal(2, (long)checks[0]["first_mismatch"]!["index"]!);
        Assert.Equal(3.01f, (float)(double)checks[0]["first_mismatch"]!["actual"]!, 5);
        Assert.Contains("kernel rejected", (string)checks[1]["error"]!);
        Assert.Equal(2, (int)results["checks_failed"]!);
    }

    [Fact]
    public void Comparison_applies_the_tolerance_and_treats_nan_as_a_failure_against_a_number()
    {
        Assert.True(Comparison.Of("y", [100f], [100.009f], 1e-5, 1e-4).Passed);
        Assert.False(Comparison.Of("y", [100f], [100.02f], 1e-5, 1e-4).Passed);
        var nan = Comparison.Of("y", [1f, 2f], [1f, float.NaN], 1e-5, 1e-4);
        Assert.Equal(1, nan.FirstBadIndex);
        Assert.Equal(double.PositiveInfinity, nan.MaxAbsError);
        Assert.False(Comparison.Of("y", [1f, 2f], [1f], 1e-5, 1e-4).Passed);
    }

    [Fact]
    public void Bad_command_lines_exit_2_with_one_error_line()
    {
        foreach (var args in new[] { Array.Empty<string>(), ["bogus"], ["check"], ["check", "--device", "tpu"], ["gemm", "--device", "cpu", "--sizes", "0"],
                     ["train-step", "--device", "cpu", "--preset", "huge", "--method", "full"], ["check", "--device", "cpu", "--frob", "1"] })
        {
            var (code, _, err) = RunRunner(args);
            Assert.Equal(2, code);
            Assert.StartsWith("error: ", err);
            Assert.Single(err.Trim().Split('\n'));
        }
    }

    [Fact]
    public void Hf_export_writes_a_folder_and_adapter_that_reproduce_its_outputs()
    {
        var dir = Path.Combine(Path.GetTempPath(), "nanolora-hf-export-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (code, _, err) = RunRunner("hf-export", "--device", "cpu", "--out", dir, "--json", Path.Combine(dir + ".json"));
            Assert.True(code == 0, err);
            var data = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "nanolora_outputs.json")))!;
            var (model, tokenizer) = PretrainedBert.LoadFolder(Path.Combine(dir, "model"), Device.Cpu);
            using var _ = model;
            model.Eval();
            var batch = tokenizer.EncodeBatch(SmallBert.Texts);
            Assert.Equal(data["input_ids"]!.AsArray().Select(n => (int)n!), batch.Ids);
            Assert.Equal(Floats(data["outputs"]!["cpu"]!["base"]!["last_hidden_state"]!), Hidden(model, batch));
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, Path.Combine(dir, "adapter"), "default");
            lora.SetActiveAdapter("default");
            var adapted = Hidden(model, batch);
            Assert.Equal(Floats(data["outputs"]!["cpu"]!["lora"]!["last_hidden_state"]!), adapted);
            Assert.Contains("FEATURE_EXTRACTION", File.ReadAllText(Path.Combine(dir, "adapter", AdapterFiles.ConfigFile)));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            File.Delete(dir + ".json");
        }
    }

    static float[] Floats(JsonNode node) => node.AsArray().Select(n => (float)n!).ToArray();

    static float[] Hidden(BertModel model, EncoderBatch batch)
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        return model.Forward(batch).Data.ToArray();
    }

    static (int Code, string Out, string Err) RunRunner(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try { return (RunnerProgram.Main(args), stdout.ToString(), stderr.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }
}
