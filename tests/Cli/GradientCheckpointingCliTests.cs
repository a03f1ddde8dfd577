using System.Text.Json;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>finetune --gradient-checkpointing: the same run, bit for bit, with recomputed activations.</summary>
public class GradientCheckpointingCliTests
{
    static (double FinalLoss, byte[] Weights) FineTune(string method, bool checkpointing)
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (code, output, err) = CliTests.Run(["finetune", "--model", CliTests.ShippedBase(), "--method", method, "--steps", "3", "--batch-size", "4", "--train-examples", "16",
            "--device", "cpu", "--out", dir, "--overwrite", "--json", .. checkpointing ? new[] { "--gradient-checkpointing" } : []]);
        Assert.True(code == 0, err);
        double loss = JsonDocument.Parse(output).RootElement.GetProperty("final_loss").GetDouble();
        string weights = method == "lora" ? AdapterFiles.WeightsFile : Checkpoint.WeightsFile;
        return (loss, File.ReadAllBytes(Path.Combine(dir, weights)));
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("full")]
    public void CheckpointingChangesNeitherTheLossesNorTheTrainedWeights(string method)
    {
        var plain = FineTune(method, false);
        var recomputed = FineTune(method, true);
        Assert.Equal(plain.FinalLoss, recomputed.FinalLoss);
        Assert.Equal(plain.Weights, recomputed.Weights);
    }
}
