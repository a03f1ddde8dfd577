using System.CommandLine;

namespace Nanolora.Cli;

/// <summary>Options several commands take, made in one place so that their names, aliases, help and checks agree.</summary>
internal static class SharedOptions
{
    /// <summary>
    /// The seq2seq checkpoint a command starts from. <c>--model</c> and <c>--base</c> are one option (eval, generate and
    /// merge said --model, finetune and experiment --base; each name now works everywhere).
    /// </summary>
    public static Option<string> Model(string description = "seq2seq checkpoint folder (model.safetensors, tokenizer.json); the default is the shipped base, found beside the program when not in the current directory",
        string shippedDefault = ShippedPaths.BaseModel) =>
        new("--model", "--base") { Description = description, DefaultValueFactory = _ => shippedDefault };

    /// <summary>The task whose shipped data a command reads; the choices are the tasks <see cref="TaskData"/> knows.</summary>
    public static Option<string> Task() =>
        new Option<string>("--task") { Description = "the task (its data ships in data/)", DefaultValueFactory = _ => "debian" }.Choices(TaskData.Names);
}
