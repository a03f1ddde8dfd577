using Nanolora.Tensors;
using Nanolora.Transformer;
using Xunit;

namespace Nanolora.Tests.Transformer;

public class TrainResultTests
{
    static LedgerSnapshot NoMemory() => Device.Cpu.Ledger.Snapshot();

    [Fact]
    public void AStepThatWaitedOnAPauseMovesTheMeanButNotTheMedian()
    {
        // One step of five took 5 s (the process was stopped): the mean triples, the median stays a real step's time.
        var result = TrainResult.FromSteps([1f], [], [100, 102, 5000, 98, 101], NoMemory(), 1, 8);
        Assert.Equal(1080.2, result.MeanStepMilliseconds, 6);
        Assert.Equal(101, result.MedianStepMilliseconds, 6);
    }

    [Fact]
    public void AnEvenCountTakesTheMiddlePairsMeanAndNoStepsGiveZero()
    {
        Assert.Equal(15, TrainResult.FromSteps([], [], [30, 10, 20, 5], NoMemory(), 1, 8).MedianStepMilliseconds, 6);
        var none = TrainResult.FromSteps([], [], [], NoMemory(), 1, 8);
        Assert.Equal(0, none.MedianStepMilliseconds);
        Assert.Equal(0, none.MeanStepMilliseconds);
    }
}
