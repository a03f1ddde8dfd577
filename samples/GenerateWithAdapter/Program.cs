// Loads the shipped base, puts a LoRA adapter on it and generates synopses, first with the adapter, then without.
// From the repository: dotnet run -c Release --project samples/GenerateWithAdapter -- ADAPTER_FOLDER "a description" …
// (an adapter from samples/FineTuneLora or `nanolora finetune --method lora --out DIR`).
using Nanolora.Lora;
using Nanolora.Transformer;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: GenerateWithAdapter ADAPTER_FOLDER TEXT [TEXT …]");
    return 1;
}
string repository = Path.GetDirectoryName(Path.GetDirectoryName(DataPaths.Find("debian-descriptions.jsonl.gz")))!;
var (model, tokenizer) = Checkpoint.Load(Path.Combine(repository, "models", "base-tiny"));
using var _ = model;

var lora = LoraModel.For(model);
AdapterFiles.Load(lora, args[0], "task");   // checks every tensor's name and shape against the base
lora.SetActiveAdapter("task");

string Generate(string text)
{
    var ids = tokenizer.EncodeSource(text, 96);   // framed as in training (ending with EOS)
    var output = SequenceDecoder.Generate(model, ids, 1, ids.Length, new DecodeOptions(MaxLength: 24, BeamSize: 4));
    return tokenizer.Decode(output[0]).Trim();
}

foreach (var text in args.Skip(1))
{
    string adapted = Generate(text);
    string plain;
    using (lora.DisableAdapters()) plain = Generate(text);   // the base model's behaviour, no reload
    Console.WriteLine($"{text}\n  with the adapter: {adapted}\n  base model:       {plain}");
}
return 0;
