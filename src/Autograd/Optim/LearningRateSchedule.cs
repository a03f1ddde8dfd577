namespace Nanolora.Autograd;

/// <summary>Learning rate as a function of the step (1-based): constant, or linear warm-up then linear/cosine decay.</summary>
public sealed record LearningRateSchedule(float PeakLr, int WarmupSteps = 0, int TotalSteps = 0, LearningRateSchedule.Decay Shape = LearningRateSchedule.Decay.Constant, float MinLr = 0f)
{
    public enum Decay { Constant, Linear, Cosine }

    public static LearningRateSchedule Constant(float lr) => new(lr);
    public static LearningRateSchedule WarmupLinear(float lr, int warmup, int total, float minLr = 0f) => new(lr, warmup, total, Decay.Linear, minLr);
    public static LearningRateSchedule WarmupCosine(float lr, int warmup, int total, float minLr = 0f) => new(lr, warmup, total, Decay.Cosine, minLr);

    public float At(int step)
    {
        if (WarmupSteps > 0 && step <= WarmupSteps) return PeakLr * step / WarmupSteps;
        if (Shape == Decay.Constant || TotalSteps <= WarmupSteps) return PeakLr;
        double progress = Math.Clamp((double)(step - WarmupSteps) / (TotalSteps - WarmupSteps), 0, 1);
        double factor = Shape == Decay.Linear ? 1 - progress : 0.5 * (1 + Math.Cos(Math.PI * progress));
        return (float)(MinLr + (PeakLr - MinLr) * factor);
    }
}
