// LoRA fine-tuning of the shipped tiny base on Debian description → synopsis, the way `nanolora finetune` does it.
// From the repository: dotnet run -c Release --project samples/FineTuneLora -- [steps] [adapter folder]
using Nanolora.Lora;
using Nanolora.Transformer;

int steps = args.Length > 0 ? int.Parse(args[0]) : 100;
string output = args.Length > 1 ? args[1] : "out/sample-adapter";

// The data and the base ship in the repository: data/ and models/base-tiny beside it.
string data = DataPaths.Find("debian-descriptions.jsonl.gz");
string repository = Path.GetDirectoryName(Path.GetDirectoryName(data))!;
var (model, tokenizer) = Checkpoint.Load(Path.Combine(repository, "models", "base-tiny"));
using var _ = model;

// Wrap q_proj and v_proj of every attention block (LoraDefaults: r 8, alpha 16); every other weight is frozen.
var lora = LoraModel.Inject(model, new LoraConfig(), "debian");
Console.WriteLine(lora.Report());

// Sources cut to 96 tokens and targets to 24, as the command does; batches of 16 in a seeded order.
var train = new BatchLoader(JsonlDataset.Load(data, "train"), tokenizer, 96, 24, batchSize: 16, seed: 1);
var options = new TrainOptions { Steps = steps, LearningRate = LoraDefaults.LearningRate, WarmupSteps = Math.Max(1, steps / 10) };
// Only the adapters' A and B are trainable, so AdamW keeps state for them alone.
var result = new Trainer(model, tokenizer).Train(model.TrainableParameters().ToList(), train, null, options);

for (int step = 10; step <= result.Losses.Count; step += 10)
    Console.WriteLine($"step {step}: loss {result.Losses[step - 1]:F3}");
AdapterFiles.Save(lora, "debian", output);   // adapter_config.json + adapter_model.safetensors, PEFT's layout
Console.WriteLine($"{result.MeanStepMilliseconds:F0} ms/step; adapter written to {output}");
