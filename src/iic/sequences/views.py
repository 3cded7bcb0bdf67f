"""Views g in time, made in torch on the batch's device, reproducible under a seed (every random draw comes from the
``generator`` given): what pairs a series with itself.

Whole series: a random crop resized back to a fixed length, with a smooth time warp (both one map of output steps to
source positions, read by linear interpolation), per-channel scaling, jitter and a masked span. Segmentation in time:
windows of a series and a second window shifted (and, where the data allow, run backwards), which map back exactly
to the first (g⁻¹) with a mask of the steps that both windows hold."""

import torch


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def interpolate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` (n × C × T) read at fractional ``positions`` (n × L, within each series) by linear interpolation:
    n × C × L."""
    low = positions.floor().clamp(0, x.shape[2] - 1)
    high = (low + 1).clamp(max=x.shape[2] - 1)
    weight = (positions - low).unsqueeze(1)
    channels = x.shape[1]
    a = x.gather(2, low.long().unsqueeze(1).expand(-1, channels, -1))
    b = x.gather(2, high.long().unsqueeze(1).expand(-1, channels, -1))
    return a + (b - a) * weight


def resample(x: torch.Tensor, lengths: torch.Tensor, length: int) -> torch.Tensor:
    """Each series' own steps (its first ``lengths[i]``) resized to ``length`` steps: n × C × length."""
    grid = torch.linspace(0, 1, length, device=x.device)
    positions = grid[None, :] * (lengths.to(x.dtype)[:, None] - 1)
    return interpolate(x, positions)


def warp_grid(n: int, length: int, strength: float, generator: torch.Generator, device: torch.device,
              knots: int = 4) -> torch.Tensor:
    """n monotone maps of [0, 1] onto itself, sampled at ``length`` points: the running sum of a speed that varies
    smoothly (log-normal at a few knots, interpolated between them) around 1."""
    grid = torch.linspace(0, 1, length, device=device)
    if strength == 0:
        return grid.expand(n, -1)
    log_speed = strength * torch.randn((n, 1, knots), generator=generator, device=device)
    speed = torch.nn.functional.interpolate(log_speed, size=length, mode="linear", align_corners=True).exp()[:, 0]
    warped = torch.cumsum(speed, dim=1) - speed[:, :1]
    return warped / warped[:, -1:].clamp(min=1e-6)


def scale_and_jitter(x: torch.Tensor, scale: float, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Each channel of each series × exp(N(0, scale)), plus N(0, jitter) noise at every step."""
    n, channels, steps = x.shape
    if scale > 0:
        x = x * (scale * torch.randn((n, channels, 1), generator=generator, device=x.device)).exp()
    if jitter > 0:
        x = x + jitter * torch.randn((n, channels, steps), generator=generator, device=x.device)
    return x


def mask_span(x: torch.Tensor, share: float, generator: torch.Generator, lengths: torch.Tensor | None = None
              ) -> torch.Tensor:
    """One span of ``share`` of each series' steps set to 0 (the mean of standardised data)."""
    if share <= 0:
        return x
    n, _, steps = x.shape
    lengths = torch.full((n,), steps, device=x.device) if lengths is None else lengths
    span = (share * lengths.float()).long()
    start = (uniform((n,), generator, x.device) * (lengths - span + 1).float()).long()
    t = torch.arange(steps, device=x.device)[None, :]
    hidden = (t >= start[:, None]) & (t < (start + span)[:, None])
    return x.masked_fill(hidden.unsqueeze(1), 0.0)


def series_view(x: torch.Tensor, lengths: torch.Tensor, length: int, crop: tuple[float, float], warp: float,
                scale: float, jitter: float, mask: float, generator: torch.Generator) -> torch.Tensor:
    """A random view of each whole series (n × C × T, valid for its first ``lengths`` steps): a crop of a random
    share in ``crop`` at a random place, time-warped and resized to ``length`` steps, scaled per channel, jittered,
    and a span masked. n × C × length."""
    n, device = len(x), x.device
    last = lengths.to(x.dtype) - 1  # positions run over 0..last
    share = crop[0] + (crop[1] - crop[0]) * uniform((n,), generator, device)
    extent = share * last
    start = uniform((n,), generator, device) * (last - extent)
    positions = start[:, None] + warp_grid(n, length, warp, generator, device) * extent[:, None]
    view = interpolate(x, positions)
    view = scale_and_jitter(view, scale, jitter, generator)
    return mask_span(view, mask, generator)


# --- segmentation in time ------------------------------------------------------------------------------------------

def window_starts(lengths: torch.Tensor, series: torch.Tensor, window: int, shift: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each drawn series, the first window's start (anywhere the window fits, else 0) and the paired window's
    offset from it, an integer in −shift..shift."""
    device = lengths.device
    room = (lengths[series] - window).clamp(min=0)
    start = (uniform((len(series),), generator, device) * (room + 1).float()).long().clamp(max=room)
    offset = (uniform((len(series),), generator, device) * (2 * shift + 1)).long().clamp(max=2 * shift) - shift
    return start, offset


def window_positions(start: torch.Tensor, window: int, flipped: torch.Tensor | None = None) -> torch.Tensor:
    """The source step of each step of each window (n × W); a flipped window runs from its end to its start."""
    t = torch.arange(window, device=start.device)[None, :]
    if flipped is not None:
        t = torch.where(flipped[:, None], window - 1 - t, t)
    return start[:, None] + t


def read_window(x: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (n × C × T) at integer ``positions`` (n × W): the window n × C × W (0 outside its series) and its
    valid steps n × W."""
    valid = (positions >= 0) & (positions < lengths[:, None])
    index = positions.clamp(0, x.shape[2] - 1)
    values = x.gather(2, index.unsqueeze(1).expand(-1, x.shape[1], -1))
    return values * valid.unsqueeze(1), valid


def inverse_index(start: torch.Tensor, offset: torch.Tensor, window: int, flipped: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """g⁻¹: for each step t of the first window (source step start + t), the step of the paired window (which
    starts at start + offset, maybe flipped) that holds the same source step, and whether it lies in that window:
    (n × W indices, clamped, n × W bool)."""
    t = torch.arange(window, device=start.device)[None, :]
    index = t - offset[:, None]
    if flipped is not None:
        index = torch.where(flipped[:, None], window - 1 - index, index)
    inside = (index >= 0) & (index < window)
    return index.clamp(0, window - 1), inside


def map_back(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-step outputs of the paired window (… × n × k × W) put in the first window's frame by ``index``
    (n × W)."""
    expanded = index.unsqueeze(-2).expand(*p.shape[:-2], p.shape[-2], -1)
    return p.gather(-1, expanded)
