"""The VLA policy: observation encoder + action-token decoder, with parallel or autoregressive decoding.

The observation (camera images, instruction, proprioceptive state) becomes a sequence of observation
tokens ``[B, T_obs, H]``. The decoder is a pre-LayerNorm transformer over
``[observation tokens; K x D action slots]`` with this attention pattern:

- observation tokens attend to observation tokens only (so they can be encoded once and cached);
- **parallel** decoding (OpenVLA-OFT style): each action slot is a learned query that attends to the
  observation and to every slot; one forward pass gives all K x D token distributions, which are
  conditionally independent given the observation, so a chunk's log-prob is the exact sum of its
  token log-probs;
- **autoregressive** decoding: slot i holds the embedding of token i - 1 (a start token for i = 0) and
  attends to the observation and to slots <= i; sampling runs K x D steps with a KV cache; the
  chunk log-prob is again an exact sum (chain rule, teacher forcing).

Token i of a chunk is action dimension ``i % D`` of future step ``i // D``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vla_rl.checkpoint import load_checkpoint, save_checkpoint
from vla_rl.policy.backbones import build_encoder
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.processor_vla import VLAProcessor
from vla_rl.policy.tokenizer import ActionTokenizer

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class Attention(nn.Module):
    """Multi-head self-attention with an optional key/value cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` ``[B, T, H]``, ``mask`` bool ``[T, T_past + T]`` (True: may attend) -> (output, (k, v))."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim)), (k, v)


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One block; returns the output and this block's (k, v) for the cache."""
        attended, kv = self.attention(self.norm1(x), mask, past)
        x = x + attended
        return x + self.mlp(self.norm2(x)), kv


class VLAPolicy(nn.Module):
    """Vision-language-action policy over discretized action chunks (see the module docstring).

    The algorithm-facing interface (all batched over B environments):

    - ``act(obs, temperature) -> (actions [B, K, D], tokens [B, K*D], log_probs [B, K*D])``
    - ``log_prob(inputs, tokens, temperature) -> [B, K*D]`` (exact per-token log-probs)
    - ``entropy(inputs, tokens) -> [B, K*D]`` (per-token entropy; teacher-forced when autoregressive)
    - ``value(inputs) -> [B]`` when ``config.value_head``
    - ``logits_and_environment_state(inputs, tokens)`` when ``config.environment_state_dim`` (SFT)
    - ``save_pretrained(dir)`` / ``from_pretrained(dir)``
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = ActionTokenizer(config.num_bins)
        self.encoder, text_tokenizer = build_encoder(config)
        self.processor = VLAProcessor(config, text_tokenizer)
        hidden, slots = config.hidden_dim, config.tokens_per_chunk
        self.slot_embedding = nn.Parameter(torch.randn(slots, hidden) * 0.02)
        self.token_embedding = nn.Embedding(config.num_bins + 1, hidden)  # + start token (autoregressive)
        self.blocks = nn.ModuleList(
            Block(hidden, config.num_heads, config.dropout) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, config.num_bins)
        self.value_head = (
            nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
            if config.value_head
            else None
        )
        self.environment_head = (
            nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.environment_state_dim)
            )
            if config.environment_state_dim
            else None
        )

    # ------------------------------------------------------------------------------------------------
    # Forward passes

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.head.weight.device

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Observation tokens ``[B, T_obs, H]`` from processor outputs."""
        return self.encoder(inputs)

    def _slot_inputs(self, batch: int, tokens: torch.Tensor | None) -> torch.Tensor:
        """Decoder inputs of the K x D slots ``[B, K*D, H]``."""
        slots = self.slot_embedding.expand(batch, -1, -1)
        if self.config.decoding == "parallel":
            return slots
        assert tokens is not None, "autoregressive decoding needs the (teacher-forced) tokens"
        start = torch.full((batch, 1), self.config.num_bins, dtype=torch.long, device=tokens.device)
        previous = torch.cat([start, tokens[:, :-1]], dim=1)
        return slots + self.token_embedding(previous)

    def _mask(self, num_obs: int, num_slots: int, device: torch.device) -> torch.Tensor:
        """Attention mask ``[T, T]`` over [observation; slots] (True = may attend)."""
        total = num_obs + num_slots
        mask = torch.zeros(total, total, dtype=torch.bool, device=device)
        mask[:num_obs, :num_obs] = True
        mask[num_obs:, :num_obs] = True
        if self.config.decoding == "parallel":
            mask[num_obs:, num_obs:] = True
        else:
            mask[num_obs:, num_obs:] = torch.tril(
                torch.ones(num_slots, num_slots, dtype=torch.bool, device=device)
            )
        return mask

    def logits(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Token logits ``[B, K*D, bins]`` in one pass (teacher-forced on ``tokens`` if autoregressive)."""
        return self._decode(self.encode(inputs), tokens)

    def logits_and_environment_state(
        self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits` and the environment head's prediction ``[B, E]`` from the mean observation token.

        One encoder pass for both (SFT's auxiliary loss); the prediction is in the units the head was
        trained on (SFT standardizes the targets).
        """
        if self.environment_head is None:
            raise RuntimeError("this policy has no environment-state head (config.environment_state_dim = 0)")
        observation = self.encode(inputs)
        return self._decode(observation, tokens), self.environment_head(observation.mean(dim=1))

    def _decode(self, observation: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """Token logits ``[B, K*D, bins]`` from observation tokens ``[B, T_obs, H]``."""
        batch, num_obs, _ = observation.shape
        x = torch.cat([observation, self._slot_inputs(batch, tokens)], dim=1)
        mask = self._mask(num_obs, self.config.tokens_per_chunk, x.device)
        for block in self.blocks:
            x, _ = block(x, mask)
        return self.head(self.norm(x[:, num_obs:]))

    def log_prob(
        self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs ``[B, K*D]`` of ``tokens`` ``[B, K*D]`` under the policy at ``temperature``."""
        logits = self.logits(inputs, tokens) / max(temperature, 1e-6)
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def entropy(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token entropy ``[B, K*D]`` (teacher-forced on ``tokens`` when autoregressive)."""
        log_probs = torch.log_softmax(self.logits(inputs, tokens).float(), dim=-1)
        return -(log_probs.exp() * log_probs).sum(-1)

    def value(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """State value ``[B]`` from the mean observation token."""
        if self.value_head is None:
            raise RuntimeError("this policy has no value head; build it with value_head=True")
        return self.value_head(self.encode(inputs).mean(dim=1)).squeeze(-1)

    # ------------------------------------------------------------------------------------------------
    # Acting

    @torch.no_grad()
    def act(
        self,
        observation: dict[str, Any],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action chunk for each observation in the batch.

        Args:
            observation: batched env observation (LeRobot keys; see `VLAProcessor`).
            temperature: sampling temperature; 0 means greedy (argmax).
            generator: the random numbers of the sampling (on the policy's device); None draws from
                torch's global generator.

        Returns:
            ``actions`` float ``[B, K, D]`` in env units, ``tokens`` int64 ``[B, K*D]`` and their
            log-probs ``[B, K*D]`` under the distribution sampled from (temperature 1 when greedy).

        """
        inputs = self.processor(observation, self.device)
        if self.config.decoding == "parallel":
            logits = self.logits(inputs)
            tokens = _sample(logits, temperature, generator)
            log_probs = torch.log_softmax(logits / (temperature or 1.0), -1).gather(-1, tokens[..., None])[
                ..., 0
            ]
        else:
            tokens, log_probs = self._decode_autoregressive(inputs, temperature, generator)
        chunk = self.tokenizer.decode(tokens).view(-1, self.config.chunk_size, self.config.action_dim)
        return self.processor.unnormalize_actions(chunk.cpu()), tokens, log_probs

    def _decode_autoregressive(
        self, inputs: dict[str, torch.Tensor], temperature: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K x D sampling steps, each a one-token forward pass over the cached keys and values."""
        observation = self.encode(inputs)
        batch, num_obs, _ = observation.shape
        obs_mask = torch.ones(num_obs, num_obs, dtype=torch.bool, device=observation.device)
        cache: KVCache = []
        x = observation
        for block in self.blocks:
            x, kv = block(x, obs_mask)
            cache.append(kv)
        previous = torch.full((batch,), self.config.num_bins, dtype=torch.long, device=observation.device)
        tokens, log_probs = [], []
        for slot in range(self.config.tokens_per_chunk):
            x = (self.slot_embedding[slot] + self.token_embedding(previous)).unsqueeze(1)
            for index, block in enumerate(self.blocks):
                x, cache[index] = block(x, None, cache[index])  # one query attends to everything cached
            logits = self.head(self.norm(x[:, 0]))
            previous = _sample(logits, temperature, generator)
            tokens.append(previous)
            log_probs.append(
                torch.log_softmax(logits / (temperature or 1.0), -1).gather(-1, previous[:, None])[:, 0]
            )
        return torch.stack(tokens, dim=1), torch.stack(log_probs, dim=1)

    # ------------------------------------------------------------------------------------------------
    # Checkpoints

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and its SHA-256; replaces ``directory`` atomically."""
        save_checkpoint(directory, self.state_dict(), self.config.to_json())

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> VLAPolicy:
        """Load a `save_pretrained` checkpoint; a missing, truncated or altered file is a clear error."""
        config_text, state = load_checkpoint(directory, map_location, kind="policy")
        policy = cls(VLAConfig.from_json(config_text))
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{directory} does not fit its config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return policy.to(map_location)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy when ``temperature`` is 0, else sample from softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(
        probs.shape[:-1]
    )
