namespace Nanolora.Autograd;

/// <summary>Learning rate as a function of the step (1-based): constant, or linear warm-up then linear/cosine decay.</summary>
public sealed record LearningRateSchedule(float PeakLr, int WarmupSteps = 0, int TotalSteps = 0, LearningRateSchedule.Decay Shape = LearningRateSchedule.Decay.Constant, float MinLr = 0f)
{
    /// <summary>How the rate falls from <see cref="PeakLr"/> to <see cref="MinLr"/> after warm-up.</summary>
    public enum Decay
    {
        /// <summary>No decay: the peak rate until the end.</summary>
        Constant,
        /// <summary>Linear decay, reaching <see cref="MinLr"/> at <see cref="TotalSteps"/>.</summary>
        Linear,
        /// <summary>Half-cosine decay, reaching <see cref="MinLr"/> at <see cref="TotalSteps"/>.</summary>
        Cosine,
    }

    /// <summary>The same rate at every step.</summary>
    public static LearningRateSchedule Constant(float lr) => new(lr);
    /// <summary>Linear warm-up from 0 over <paramref name="warmup"/> steps, then linear decay to <paramref name="minLr"/> at step <paramref name="total"/>.</summary>
    public static LearningRateSchedule WarmupLinear(float lr, int warmup, int total, float minLr = 0f) => new(lr, warmup, total, Decay.Linear, minLr);
    /// <summary>Linear warm-up from 0 over <paramref name="warmup"/> steps, then cosine decay to <paramref name="minLr"/> at step <paramref name="total"/>.</summary>
    public static LearningRateSchedule WarmupCosine(float lr, int warmup, int total, float minLr = 0f) => new(lr, warmup, total, Decay.Cosine, minLr);

    /// <summary>The rate at a 1-based <paramref name="step"/>; steps past <see cref="TotalSteps"/> stay at <see cref="MinLr"/>.</summary>
    public float At(int step)
    {
        if (WarmupSteps > 0 && step <= WarmupSteps) return PeakLr * step / WarmupSteps;
        if (Shape == Decay.Constant || TotalSteps <= WarmupSteps) return PeakLr;
        double progress = Math.Clamp((double)(step - WarmupSteps) / (TotalSteps - WarmupSteps), 0, 1);
        double factor = Shape == Decay.Linear ? 1 - progress : 0.5 * (1 + Math.Cos(Math.PI * progress));
        return (float)(MinLr + (PeakLr - MinLr) * factor);
    }
}
