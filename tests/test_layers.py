import pytest
import torch

from oracle_kd.models.layers import Dropout, dropout


def test_dropout_zeroes_a_share_p_and_scales_the_rest_by_its_inverse():
    torch.manual_seed(0)
    out = dropout(torch.ones(4, 65536), 0.25)  # 0.25 is 16384 / 65536 exactly: the kept scale is 4/3
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full((int(kept.sum()),), 4 / 3), atol=0, rtol=0)
    # each of a 64-bit word's four 16-bit chunks drops a quarter (a biased top chunk would drop none):
    # 65,536 draws per position, binomial std 111, so 16,384 +- 600 is over five std
    dropped_per_chunk = (~kept).reshape(-1, 4).sum(0)
    assert all(abs(int(n) - 16384) < 600 for n in dropped_per_chunk), dropped_per_chunk


def test_dropout_rounds_p_to_sixteen_bits():
    torch.manual_seed(0)
    out = dropout(torch.ones(1000), 0.1)  # 0.1 * 65536 = 6553.6 -> 6554 of 65536 dropped
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(65536 / (65536 - 6554), rel=1e-7)


def test_dropout_is_the_identity_in_eval_or_at_p_0_and_zero_at_p_1():
    x = torch.randn(3, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros(3, 5))
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


def test_dropout_follows_the_seed_and_its_gradient_is_its_mask():
    x = torch.ones(7, 9, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.5)
    torch.manual_seed(3)
    second = dropout(x, 0.5)
    assert torch.equal(first, second) and bool((first == 0).any()) and bool((first == 2).any())
    first.sum().backward()
    torch.testing.assert_close(x.grad, first.detach(), atol=0, rtol=0)  # x = 1: the output is mask * 2


def test_depthwise_by_hand():
    from oracle_kd.models.layers import DepthwiseConv1d

    conv = DepthwiseConv1d(1, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
    x = torch.tensor([[[1.0], [2.0], [3.0]]], requires_grad=True)  # (batch, time, channels)
    y = conv(x)  # y[t] = x[t - 1] + 10 x[t] + 100 x[t + 1]
    torch.testing.assert_close(y, torch.tensor([[[210.0], [321.0], [32.0]]]))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[[11.0], [111.0], [110.0]]]))  # taps that reach each sample
    torch.testing.assert_close(conv.weight.grad, torch.tensor([[[3.0, 6.0, 5.0]]]))  # sums of [0, 1, 2, 3, 0] windows
    dilated = DepthwiseConv1d(1, 3, dilation=2)
    with torch.no_grad():
        dilated.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [5.0]]])
    # y[t] = x[t - 2] + 10 x[t] + 100 x[t + 2]: an odd length, so the phases are padded
    torch.testing.assert_close(dilated(x), torch.tensor([[[310.0], [420.0], [531.0], [42.0], [53.0]]]))


@pytest.mark.parametrize("kernel, dilation, stride, frames", [(5, 1, 1, 17), (3, 2, 1, 17), (11, 2, 1, 16),
                                                                (3, 3, 1, 16), (5, 1, 2, 17)])
def test_time_major_layers_equal_torchs_channels_first_ones(kernel, dilation, stride, frames):
    """Outputs, input gradients and parameter gradients of the time-major layers equal those of
    `nn.Conv1d` / `nn.BatchNorm1d` on the same tensors transposed, under the same checkpoint;
    and so do the layers' on the same tensors as (batch, channels, 1, time) images."""
    import copy

    from oracle_kd.models.layers import BatchNorm1d, DepthwiseConv1d, PointwiseConv1d

    torch.manual_seed(0)
    pairs = [
        (DepthwiseConv1d(6, kernel, stride=stride, dilation=dilation),
         torch.nn.Conv1d(6, 6, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation,
                         groups=6, bias=False)),
        (PointwiseConv1d(6, 4), torch.nn.Conv1d(6, 4, 1)),
        (BatchNorm1d(6), torch.nn.BatchNorm1d(6)),
    ]
    x = torch.randn(3, frames, 6)
    for ours, reference in pairs:
        reference.load_state_dict(ours.state_dict())  # the same parameters under the same names
        results = []
        image, from_image = (lambda t: t.transpose(1, 2).unsqueeze(2)), (lambda t: t.squeeze(2).transpose(1, 2))
        layouts = ((ours, lambda t: t, lambda t: t), (copy.deepcopy(ours), image, from_image),
                   (reference, lambda t: t.transpose(1, 2), lambda t: t.transpose(1, 2)))
        for conv, to_layout, back in layouts:
            xi = x.clone().requires_grad_()
            y = back(conv(to_layout(xi)))
            y.backward(torch.linspace(-1, 1, y.numel()).view(y.shape))
            results.append((y.detach(), xi.grad, *(p.grad for p in conv.parameters()),
                            *(b for b in conv.buffers() if b.is_floating_point())))
        assert results[0][0].shape == (3, (frames + stride - 1) // stride if ours is pairs[0][0] else frames,
                                       results[0][0].shape[2])
        for other in results[1:]:
            for a, b in zip(results[0], other, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="odd kernel"):
        DepthwiseConv1d(4, 4)
    with pytest.raises(ValueError, match="not both"):
        DepthwiseConv1d(4, 3, stride=2, dilation=2)



def test_fold_batch_norms_merges_each_pointwise_conv_with_its_batch_norm():
    from oracle_kd.models.layers import BatchNorm1d, PointwiseConv1d, fold_batch_norms

    conv, norm = PointwiseConv1d(2, 2, bias=False), BatchNorm1d(2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0], [2.0]], [[0.0], [-1.0]]]))
        norm.running_mean.copy_(torch.tensor([1.0, -2.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25]) - norm.eps)  # standard deviations 2 and 0.5
        norm.weight.copy_(torch.tensor([3.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0]))
    model = torch.nn.Sequential(conv, norm, torch.nn.ReLU()).train()
    folded = fold_batch_norms(model)
    assert model.training and not folded.training  # a copy: the model itself is left as it was
    assert isinstance(folded[1], torch.nn.Identity) and isinstance(folded[0], PointwiseConv1d)
    # channel 0: (x0 + 2 x1 - 1) / 2 * 3 + 0.5; channel 1: (-x1 + 2) / 0.5
    torch.testing.assert_close(folded[0].weight.squeeze(-1), torch.tensor([[1.5, 3.0], [0.0, -2.0]]))
    torch.testing.assert_close(folded[0].bias, torch.tensor([-1.0, 4.0]))
    x = torch.randn(3, 5, 2)
    torch.testing.assert_close(folded(x), model.eval()(x))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_relu_dropout_is_dropout_of_relu_from_the_same_draws(p):
    from oracle_kd.models.layers import relu_dropout

    x = torch.linspace(-3, 3, 4 * 7 * 5).view(4, 7, 5)
    grad = torch.linspace(1, 2, x.numel()).view(x.shape)
    results = []
    for fn in (lambda t: relu_dropout(t, p), lambda t: dropout(torch.relu(t), p)):
        torch.manual_seed(11)
        xi = x.clone().requires_grad_()
        y = fn(xi)
        y.backward(grad)
        results.append((y.detach(), xi.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the same bits
    y, g = results[0]
    assert bool((y[x <= 0] == 0).all()) and bool((g[x <= 0] == 0).all())  # ReLU: nothing below zero passes
    if 0 < p < 1:  # kept elements are scaled by 1 / (1 - p) in both directions
        kept = y > 0
        torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-4, atol=0)
        torch.testing.assert_close(g[kept], grad[kept] / (1 - p), rtol=1e-4, atol=0)
    torch.testing.assert_close(relu_dropout(x, p, training=False), torch.relu(x))
    from oracle_kd.models.layers import ReLUDropout

    layer = ReLUDropout(p)
    torch.manual_seed(11)
    torch.testing.assert_close(layer(x), y, atol=0, rtol=0)  # the module is the function, from the same draws
    torch.testing.assert_close(layer.eval()(x), torch.relu(x))


@pytest.mark.parametrize("dilation, stride", [(1, 1), (2, 1), (1, 2)])
def test_depthwise_weight_gradients_have_the_weights_strides(dilation, stride):
    """DDP copies each gradient into its bucket with the parameter's strides and warns when they
    differ (a (C, 1, K) gradient strided (K, 1, 1) did)."""
    from oracle_kd.models.layers import DepthwiseConv1d

    conv = DepthwiseConv1d(8, 5, stride=stride, dilation=dilation)
    conv(torch.randn(2, 13, 8)).sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride() == (5, 5, 1)
