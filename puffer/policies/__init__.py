"""Acting policies, by kind: MLP and LSTM (`core`), MAPPO's central critic, the Decision Transformer
(`puffer.sequence`) and Dreamer's RSSM actor; `kinds` maps a checkpoint's policy spec to its kind.

A policy object holds only static configuration (sizes, spaces); parameters are a flat dict and
every method is a pure function of `(be, params, ...)`, so the same code trains on every backend
and traces into ONNX. See `puffer.policies.core` for the action head and the action layout.
"""

from puffer.policies.central_critic import CentralCriticPolicy
from puffer.policies.core import (
                                  ActionHead,
                                  Dist,
                                  LSTMPolicy,
                                  MLPPolicy,
                                  Policy,
                                  act,
                                  make_policy,
                                  reset_state,
                                  to_env_actions,
)
from puffer.policies.kinds import Kind, from_spec, kind, policy_spec

__all__ = ["ActionHead", "CentralCriticPolicy", "Dist", "Kind", "LSTMPolicy", "MLPPolicy", "Policy", "act", "from_spec",
           "kind", "make_policy", "policy_spec", "reset_state", "to_env_actions"]
