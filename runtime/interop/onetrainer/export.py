"""Write a graph as a OneTrainer config (``nodetrainer export onetrainer GRAPH -o CONFIG.json``).

The inverse of the importer, for graphs whose nodes all map: nodes are found by type and by their links
(the train.loop, its model input's setup and that setup's loader, the batches and the concept branches
upstream of them, the hooks and the saver of the trained model), never by id. Each param becomes its
OneTrainer key through ``export_values`` (which checks itself against the importer's conversions).
Anything that does not map (a node no OneTrainer setting makes, a param value the importer could not
have written) is collected, and ``export`` raises one ValueError listing every one, a line each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...graph import Graph, Link
from ...references import refs_in, substitute
from ...registry import Registry, default_registry
from . import defaults as D
from . import export_values as X
from .data_graph import COLOURS
from .family import OneTrainerFamily, families
from .training import ATTENTION, LOSS_WEIGHTS, SCHEDULE_FREE

#: the T5 token count key of the families that read it (family.uses)
SEQUENCE_LENGTH = "text_encoder_2_sequence_length"
#: branch stages of a concept (the importer's data_graph), in OneTrainer's order
CAPTION_STAGES = ("data.load_text", "data.shuffle_tags", "data.drop_tags")
IMAGE_STAGES = ("data.random_flip", "data.random_rotate", *(t.partition("@")[0] for _, t, _ in COLOURS))


def _name(type_id: str) -> str:
    return type_id.partition("@")[0].partition(" ")[0]


class Export:
    """One export in progress: the graph, what each node's params resolve to, the config being written,
    the nodes accounted for and what does not map."""

    def __init__(self, graph: Graph, registry: Registry):
        self.g, self.r = graph, registry
        self.out = D.train_config_defaults()
        self.out = {"__version": D.CURRENT_VERSION, **self.out, "concepts": [], "samples": []}
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.claimed: dict[str, str] = {}
        self.read: set[tuple[str, str]] = set()
        self.inputs = {n: gi.default for n, gi in graph.inputs.items() if gi.has_default}
        #: (node, value) of every clip_skip / T5 max_length, which OneTrainer keeps once; each concept's bucket
        self.clip_skips: list = []
        self.lengths: list = []
        self.buckets: list = []
        self.masked = False
        self.save_hook: str | None = None

    # -- reading the graph -----------------------------------------------------------------------------
    def spec(self, node: str):
        return self.r.get(self.g.nodes[node].type)

    def type(self, node: str) -> str:
        return self.g.nodes[node].type

    def claim(self, node: str, role: str) -> str:
        if node in self.claimed and self.claimed[node] != role:
            self.fail(node, None, f"used as {self.claimed[node]} and as {role}: OneTrainer has one of each")
        self.claimed[node] = role
        return node

    def p(self, node: str, key: str):
        """A param as it resolves (graph inputs' defaults substituted), marked as read."""
        self.read.add((node, key))
        entry, spec = self.g.nodes[node], self.spec(node)
        default = spec.params[key].default
        if key not in entry.params:
            return default
        raw = entry.params[key]
        missing = [n for n in refs_in(raw) if n not in self.inputs]
        if missing:
            self.fail(node, key, f"graph input {missing[0]!r} has no default: give it one (or --set it) "
                                 "before exporting")
            return default
        return substitute(raw, self.inputs)

    def path(self, node: str, key: str) -> str:
        """A path param for OneTrainer, which resolves relative paths against its own folder: one relative to
        a graph file's folder that exists there is written absolute."""
        value = str(self.p(node, key))
        if self.g.path is not None and not os.path.isabs(value) and (self.g.base_dir / value).exists():
            absolute = str((self.g.base_dir / value).resolve())
            self.warnings.append(f"{node}.{key}: {value} is relative to the graph's folder: written as {absolute}")
            return absolute
        return value

    def params(self, node: str, *keys: str) -> dict:
        return {k: self.p(node, k) for k in keys}

    def expect(self, node: str, key: str, value, reason: str = "") -> None:
        got = self.p(node, key)
        if not X.same(got, value):
            self.fail(node, key, f"{got!r}: OneTrainer has no such setting" + (f" ({reason})" if reason else ""))

    def fail(self, node: str | None, key: str | None, reason: str) -> None:
        where = f"node {node} ({self.type(node)})" if node else "graph"
        line = f"{where}{f' param {key}' if key else ''}: {reason}"
        if line not in self.problems:
            self.problems.append(line)

    def link(self, node: str, port: str) -> Link | None:
        value = self.g.nodes[node].inputs.get(port)
        if isinstance(value, list):
            return value[0] if len(value) == 1 else None
        return value

    def links(self, node: str, port: str) -> list[Link]:
        value = self.g.nodes[node].inputs.get(port)
        return [] if value is None else value if isinstance(value, list) else [value]

    def source(self, node: str, port: str, types: tuple[str, ...] | str, required: bool = True) -> str | None:
        """The node linked into ``node.port`` when it is one of ``types``."""
        types = (types,) if isinstance(types, str) else types
        lk = self.link(node, port)
        if lk is None or lk.node not in self.g.nodes or self.type(lk.node) not in types:
            if required or lk is not None:
                self.fail(node, None, f"input {port} must come from {' or '.join(types)}")
            return None
        return lk.node

    def readers(self, node: str, port: str) -> list[str]:
        return [c for c, _, lk in self.g.consumers(node) if lk.port == port]

    def convert(self, node: str, fn, *args):
        try:
            return fn(*args)
        except X.NoMap as e:
            self.fail(node, e.param, e.reason)
            return None

    # -- the whole graph ---------------------------------------------------------------------------------
    def run(self) -> dict:
        loops = [n for n in self.g.nodes if self.type(n) == "train.loop"]
        if len(loops) != 1:
            self.problems.append(f"graph: a OneTrainer config is one training run: the graph has {len(loops)} "
                                 "train.loop nodes")
            return self.out
        self.loop = self.claim(loops[0], "the training loop")
        self.accum = max(1, int(self.p(self.loop, "gradient_accumulation")))
        if not self.model():
            return self.out
        self.training()
        self.out["concepts"] = self.stream(self.source(self.loop, "batches", "data.batches"), "STANDARD")
        self.hooks()
        self.saver()
        self.clip_skip()
        self.sequence_length()
        self.loader_extras()
        self.leftovers()
        return versioned(self.out)

    def leftovers(self) -> None:
        for node, entry in self.g.nodes.items():
            if node not in self.claimed:
                self.fail(node, None, "no OneTrainer setting makes this node")
                continue
            spec = self.spec(node)
            for key in entry.params:
                if (node, key) in self.read or key not in spec.params:
                    continue
                value = self.p(node, key)
                if not X.same(value, spec.params[key].default):
                    self.fail(node, key, f"{value!r}: OneTrainer has no such setting (only the default "
                                         f"{spec.params[key].default!r} maps)")

    # -- model: setup and loader --------------------------------------------------------------------------
    def model(self) -> bool:
        lk = self.link(self.loop, "model")
        if lk is None or lk.node not in self.g.nodes:
            self.fail(self.loop, None, "input model must come from a family's LoRA, fine-tune or embedding setup")
            return False
        setup = lk.node
        found = [(f, m) for f in families() for m, t in f.setups.items() if _name(t) == self.type(setup)]
        if not found:
            self.fail(setup, None, "not a setup of a OneTrainer model type (train.loop's model must come from "
                                   "a family's LoRA, fine-tune or embedding setup)")
            return False
        self.family, self.method = found[0]
        self.setup = self.claim(setup, "the setup")
        fam: OneTrainerFamily = self.family
        loader = self.source(setup, "model", _name(fam.loader))
        if loader is None:
            return False
        self.loader = self.claim(loader, "the model loader")
        model_type = next((t for t, params in fam.model_types.items()
                           if all(X.same(self.p(loader, k), v) for k, v in params.items())), None)
        if model_type is None:
            self.fail(loader, None, "its params match no OneTrainer model type")
            return False
        self.model_type = model_type
        self.out.update(model_type=model_type, training_method=self.method, base_model_name=self.path(loader, "path"))
        self.out["samples"] = []
        for key, part in fam.parts.items():
            if part.dtype:
                dtype = self.p(loader, part.dtype)
                if dtype in X.FLOATS:
                    self.out[key]["weight_dtype"] = X.FLOATS[dtype]
                else:
                    self.fail(loader, part.dtype, f"{dtype!r}: OneTrainer's weight dtypes are float32, float16, "
                                                  "bfloat16 (or quantized ones this loader has not)")
        self.quantized(loader)
        try:
            fixed = fam.setup_params(_Quiet(self.out, self.method), self.method)
        except (KeyError, AttributeError, TypeError):  # a family whose setup params read the config
            fixed = {}
        for key, value in fixed.items():
            self.expect(setup, key, value, "this family's importer always writes it")
        {"LORA": self.lora, "FINE_TUNE": self.finetune, "EMBEDDING": self.embedding}[self.method]()
        self.parts()
        return True

    def quantized(self, loader: str) -> None:
        """A loader's ``quantize``: the weight_dtype of each part the family's ``quantize_params`` stores so."""
        if "quantize" not in self.spec(loader).params:
            return
        scheme = self.p(loader, "quantize")
        if scheme in (None, "none"):
            return
        name = {v: k for k, v in X.QUANTIZED.items()}.get(scheme)
        parts = {k: p for k, p in self.family.parts.items() if p.dtype}
        trial = {**self.out, **{k: {**self.out[k], "weight_dtype": name} for k in parts}}
        quiet = _Quiet(trial, self.method)
        chosen = [k for k, part in parts.items()
                  if name and (self.family.quantize_params(quiet, k, part, scheme) or {}).get("quantize") == scheme]
        if not chosen:
            self.fail(loader, "quantize", f"{scheme}: no OneTrainer weight dtype gives this ({self.method})")
        for k in chosen:
            self.out[k]["weight_dtype"] = name
            self.expect(loader, parts[k].dtype, self.spec(loader).params[parts[k].dtype].default,
                        "a quantized part's compute dtype is the loader's default")

    def lora(self) -> None:
        s, o = self.setup, self.out
        adapter = self.p(s, "adapter")
        kinds = {"lora": ("LORA", False), "dora": ("LORA", True), "loha": ("LOHA", False), "lokr": ("LOKR", False),
                 "oft": ("OFT_2", False)}
        if adapter not in kinds:
            self.fail(s, "adapter", f"{adapter}: OneTrainer has no such adapter (LoRA, DoRA, LoHa, LoKr, OFT)")
        o["peft_type"], o["lora_decompose"] = kinds.get(adapter, ("LORA", False))
        o["lokr_dim" if adapter == "lokr" else "lora_rank"] = int(self.p(s, "rank"))
        o["lora_alpha"] = float(self.p(s, "alpha"))
        o["dropout_probability"] = float(self.p(s, "dropout"))
        if adapter == "oft":
            o["oft_block_size"] = int(self.p(s, "oft_block_size"))
        if adapter == "lokr":
            o["lokr_decompose_factor"] = int(self.p(s, "lokr_factor"))
            o["lokr_decompose_both"] = bool(self.p(s, "lokr_decompose_both"))
        found = self.convert(s, X.layer_filter, self.p(s, "target_regex"), self.p(s, "targets"), self.model_type)
        if found:
            o["layer_filter"], o["layer_filter_regex"] = found
            o["layer_filter_preset"] = "custom" if found[0] else "full"

    def finetune(self) -> None:
        pass  # the per-part flags and learning rates: parts()

    def embedding(self) -> None:
        s, e = self.setup, self.out["embedding"]
        e["placeholder"] = str(self.p(s, "placeholder"))
        e["token_count"] = int(self.p(s, "vectors"))
        e["initial_embedding_text"] = str(self.p(s, "initial_text"))

    def parts(self) -> None:
        fam, s, o = self.family, self.setup, self.out
        stops = {}
        for entry in self.p(self.loop, "stop_parts") or []:
            got = self.convert(self.loop, X.stop_entry, entry, self.accum)
            if got:
                stops[got[0]] = got[1:]
        names = set()
        for key, part in fam.parts.items():
            names.add(part.name)
            if part.denoiser:
                o[key]["gradient_checkpointing"] = bool(self.p(self.loop, "gradient_checkpointing"))
                o[key]["activation_offloading"] = bool(self.p(self.loop, "offload_activations"))
            if not part.trains or self.method == "EMBEDDING":
                if part.name in stops:
                    self.fail(self.loop, "stop_parts", f"{part.name} does not train here")
                continue
            flag = part.finetune if self.method == "FINE_TUNE" else part.lora
            trains = True if flag is None else self._part_trains(part, flag)
            o[key]["train"] = trains
            n, unit = stops.get(part.name, (None, "NEVER"))
            o[key]["stop_training_after"], o[key]["stop_training_after_unit"] = n, unit
            if part.name in stops and not trains:
                self.fail(self.loop, "stop_parts", f"{part.name} does not train, so it cannot stop")
            o[key]["learning_rate"] = None
            if self.method == "FINE_TUNE" and part.lr and trains:
                lr = float(self.p(s, part.lr))
                o[key]["learning_rate"] = lr if lr > 0 else None
        for name in set(stops) - names:
            self.fail(self.loop, "stop_parts", f"{name} is not a part of {self.model_type}")

    def _part_trains(self, part, flag: str) -> bool:
        value = self.p(self.setup, flag)
        if isinstance(value, bool):
            return value
        import importlib

        table = getattr(importlib.import_module(type(self.family).__module__), "TEXT_ENCODERS", {})
        index = getattr(importlib.import_module(type(self.family).__module__), "ENCODER_INDEX", {})
        if value in table and part.name in index:
            return index[part.name] in table[value]
        self.fail(self.setup, flag, f"{value!r}: not a choice the OneTrainer export knows")
        return False

    # -- optimizer, schedule, objective, loop, EMA --------------------------------------------------------------
    def training(self) -> None:
        o = self.out
        opt = self.source(self.loop, "optimizer", "train.optimizer")
        if opt:
            self.claim(opt, "the optimizer")
            name = self.p(opt, "name")
            ot = self.convert(opt, X.optimizer, name)
            o["optimizer"]["optimizer"] = ot or "ADAMW"
            lr = float(self.p(opt, "lr"))
            if self.method == "EMBEDDING":
                o["embedding_learning_rate"] = None
            o["learning_rate"], o["learning_rate_scaler"] = lr, "NONE"
            spec = self.spec(opt).params
            for key in spec:
                if key in ("name", "lr", "warmup_steps"):
                    continue
                value = self.p(opt, key)
                if value is None:
                    continue
                if key in D.OPTIMIZER and key not in ("fused", "foreach", "capturable", "differentiable"):
                    o["optimizer"][key] = value
                    if X.same(value, D.OPTIMIZER[key]):
                        self.warnings.append(f"optimizer.{key} = {value!r} is OneTrainer's default, which an import "
                                             "leaves to the optimizer (the param empty)")
                else:
                    self.fail(opt, key, f"{value!r}: OneTrainer's optimizer settings have no {key}")
        schedule = self.source(self.loop, "schedule", "train.lr_schedule")
        if schedule:
            self.claim(schedule, "the learning-rate schedule")
            self._schedule(schedule, opt)
        self._objective()
        o["epochs"] = int(self.p(self.loop, "epochs"))
        o["gradient_accumulation_steps"] = self.accum
        self.expect(self.loop, "max_steps", 0, "OneTrainer runs by epochs and has no max-steps setting")
        norm = float(self.p(self.loop, "max_grad_norm"))
        o["clip_grad_norm"] = norm if norm > 0 else None
        precision, tf32 = self.p(self.loop, "precision"), bool(self.p(self.loop, "tf32"))
        if tf32 and precision != "fp32":
            self.fail(self.loop, "tf32", f"with precision {precision}: OneTrainer's TFLOAT_32 is fp32 with TF32")
        o["train_dtype"] = "TFLOAT_32" if tf32 and precision == "fp32" else X.PRECISION[precision]
        o["train_device"] = {"auto": "cuda", "cuda": "cuda", "cpu": "cpu", "mps": "mps"}[self.p(self.loop, "device")]
        attention = self.p(self.loop, "attention")
        inverse = {v: k for k, v in ATTENTION.items()}
        if attention not in inverse:
            self.fail(self.loop, "attention", f"{attention}: OneTrainer's attention is SDP (auto), FLASH or CUDNN")
        o["attention_mechanism"] = inverse.get(attention, "SDP")
        compile_ = self.p(self.loop, "compile")
        if compile_ not in ("off", "default"):
            self.fail(self.loop, "compile", f"{compile_}: OneTrainer's compile is on (default) or off")
        o["compile"] = compile_ != "off"

    def _schedule(self, node: str, opt: str | None) -> None:
        o = self.out
        name = self.p(node, "name")
        schedule_free = opt is not None and self.p(opt, "name") in SCHEDULE_FREE
        if schedule_free:
            self.expect(node, "name", "constant", "a schedule-free optimizer keeps its rate constant")
            self.expect(node, "warmup", 0.0, "the schedule-free optimizer warms up itself (its warmup_steps)")
            o["learning_rate_scheduler"] = "CONSTANT"
            o["learning_rate_warmup_steps"] = float(self.p(opt, "warmup_steps") or 0)
        else:
            o["learning_rate_scheduler"] = self.convert(node, X.schedule_name, name) or "CONSTANT"
            w = self.convert(node, X.warmup, self.p(node, "warmup"), self.accum)
            o["learning_rate_warmup_steps"] = 0.0 if w is None else w
        if name in ("cosine_with_soft_restarts", "cosine_with_hard_restarts"):
            o["learning_rate_cycles"] = float(self.p(node, "cycles"))
        o["learning_rate_min_factor"] = float(self.p(node, "min_factor"))

    def _objective(self) -> None:
        flow = self.family.objective == "flow"
        kind = "train.flow_matching_objective" if flow else "train.diffusion_objective"
        node = self.source(self.loop, "objective", kind)
        if node is None:
            return
        self.claim(node, "the objective")
        o, spec = self.out, self.spec(node).params
        shape = [k for k in spec if k in ("sampling", "timestep_distribution", "logit_mean", "logit_std", "mode_scale",
                                          "heavy_tail_scale", "beta_alpha", "beta_beta", "parabola_curvature",
                                          "distribution_center", "sigmoid_steepness", "min_sigma", "max_sigma",
                                          "shift", "dynamic_shift", "min_timestep", "max_timestep",
                                          "timestep_shift")]
        values = {k: self.g.nodes[node].params.get(k, spec[k].default) for k in shape}
        values = {k: substitute(v, self.inputs) if not [n for n in refs_in(v) if n not in self.inputs] else
                  spec[k].default for k, v in values.items()}
        name = values["sampling" if flow else "timestep_distribution"]
        for k in ("sampling", "timestep_distribution", "min_sigma", "max_sigma", "shift", "dynamic_shift",
                  "min_timestep", "max_timestep", "timestep_shift"):
            if k in spec:
                self.p(node, k)
        used = {"logit_normal": ("logit_mean", "logit_std"), "heavy_tail": ("heavy_tail_scale",),
                "mode": ("mode_scale",), "beta": ("beta_alpha", "beta_beta"),
                "inverted_parabola": ("parabola_curvature", "distribution_center"),
                "sigmoid": ("sigmoid_steepness", "distribution_center")}.get(name, ())
        for k in used:
            self.p(node, k)
        got = self.convert(node, X.timesteps, values, flow)
        if got:
            o.update(got)
        loss = self.p(node, "loss")
        strengths = ("mse_strength", "mae_strength", "log_cosh_strength", "huber_strength")
        if loss == "mix":
            for k in strengths:
                o[k] = float(self.p(node, k))
        elif loss != "mse":
            self.fail(node, "loss", f"{loss}: OneTrainer mixes losses by strengths (loss: mix with "
                                    f"{loss.replace('l1', 'mae')}_strength 1, mse_strength 0)")
        o["huber_delta"] = float(self.p(node, "huber_delta"))
        weighting = self.p(node, "loss_weighting")
        table = {"none": "CONSTANT", "sigma_sqrt": "SIGMA"} if flow else {v: k for k, v in LOSS_WEIGHTS.items()}
        if weighting not in table:
            self.fail(node, "loss_weighting", f"{weighting}: OneTrainer has no such loss weighting for this model")
        o["loss_weight_fn"] = table.get(weighting, "CONSTANT")
        if not flow:
            gamma = float(self.p(node, "min_snr_gamma"))
            if weighting == "min_snr_gamma" or (weighting == "none" and gamma > 0):
                o["loss_weight_fn"], o["loss_weight_strength"] = "MIN_SNR_GAMMA", gamma
                if weighting == "none":
                    self.warnings.append(f"{node}: min_snr_gamma {gamma:g} with loss_weighting none is min-SNR "
                                         "weighting: written as loss_weight_fn MIN_SNR_GAMMA")
            elif gamma:
                self.fail(node, "min_snr_gamma", f"{gamma:g} with loss_weighting {weighting}: OneTrainer has one "
                                                 "loss weighting")
            if weighting == "p2":
                o["loss_weight_strength"] = float(self.p(node, "p2_gamma"))
        o["offset_noise_weight"] = float(self.p(node, "offset_noise"))
        if not flow:
            o["generalized_offset_noise"] = bool(self.p(node, "generalized_offset_noise"))
            o["perturbation_noise_weight"] = float(self.p(node, "input_perturbation"))
            o["rescale_noise_scheduler_to_zero_terminal_snr"] = bool(self.p(node, "zero_terminal_snr"))
            prediction = self.p(node, "prediction")
            o["force_v_prediction"] = prediction == "v_prediction"
            o["force_epsilon_prediction"] = prediction == "epsilon"
        masked = self.p(node, "masked_training")
        if masked == "off":
            self.fail(node, "masked_training", "off: OneTrainer's masked_training is on or off by the masks")
        self.masked = masked == "on"
        o["masked_training"] = self.masked
        if self.masked:
            o["unmasked_probability"] = float(self.p(node, "unmasked_probability"))
            o["unmasked_weight"] = float(self.p(node, "unmasked_weight"))
            o["normalize_masked_area_loss"] = bool(self.p(node, "normalize_masked_area"))
        self.objective = node

    # -- data ------------------------------------------------------------------------------------------------------
    def stream(self, batches: str | None, concept_type: str) -> list[dict]:
        """The concepts upstream of a data.batches node, each from its branch."""
        if batches is None:
            return []
        self.claim(batches, "the batches")
        if concept_type == "VALIDATION":
            self.expect(batches, "batch_size", 1, "OneTrainer validates one item at a time")
        else:
            self.out["batch_size"] = int(self.p(batches, "batch_size"))
        upstream, todo = [], [batches]
        while todo:
            node = todo.pop()
            for _, lk in self.g.nodes[node].links():
                if lk.node in self.g.nodes and lk.node not in upstream and lk.node not in (self.loader, self.setup):
                    upstream.append(lk.node)
                    todo.append(lk.node)
        order = [n for n in self.g.nodes if n in upstream]
        sources = [n for n in order if self.type(n) == "data.concepts"]
        if not sources:
            self.fail(batches, None, "no data.concepts source upstream: OneTrainer trains on concepts")
        concepts = [self.concept(src, concept_type) for src in sources]
        caches = [n for n in order if self.type(n) == "data.disk_cache"]
        self.out["latent_caching"] = bool(caches)
        for cache in caches[:1]:
            self.claim(cache, "the cache")
            self.p(cache, "rename")
            folder = self.p(cache, "folder")
            if folder is not None:
                self.out["cache_dir"] = str(folder)
            n = max(1, int(self.p(cache, "variations")))
            for c in concepts:
                c["image_variations"] = c["text_variations"] = n
        for node in order:
            t = self.type(node)
            if t == "data.merge":
                self.claim(node, "the merge of the concepts")
            elif t.startswith(self.family.name + ".") or t == "sd.encode_image" or t == "sd.tokenize":
                self.claim(node, "an encoder")
                if "clip_skip" in self.spec(node).params:
                    self.clip_skips.append((node, self.p(node, "clip_skip")))
                if "max_length" in self.spec(node).params and self.family.uses(SEQUENCE_LENGTH) and \
                        "max_length" in self.g.nodes[node].params:
                    self.lengths.append((node, self.p(node, "max_length")))
        return concepts

    def concept(self, src: str, concept_type: str) -> dict:
        c = D.concept_defaults()
        c["seed"] = int(self.p(self.loop, "seed")) if isinstance(self.p(self.loop, "seed"), int) else 0
        c["type"] = concept_type
        self.claim(src, "a concept's source")
        node = self.source(src, "concepts", "data.concept")
        if node is None:
            return c
        self.claim(node, "a concept")
        c["path"], c["name"] = self.path(node, "folder"), str(self.p(node, "name"))
        c["include_subdirectories"] = bool(self.p(node, "recursive"))
        c["balancing"] = float(self.p(node, "balancing"))
        c["balancing_strategy"] = str(self.p(node, "balancing_strategy")).upper()
        c["loss_weight"] = float(self.p(node, "loss_weight"))
        role = self.p(node, "role")
        roles = {"standard": "STANDARD", "prior_prediction": "PRIOR_PREDICTION"}
        if role not in roles or (concept_type == "VALIDATION" and role != "standard"):
            self.fail(node, "role", f"{role}: not a OneTrainer concept type here")
        elif concept_type != "VALIDATION":
            c["type"] = roles[role]
        self.expect(node, "masks", self.masked, "the objective's masked_training decides OneTrainer's masks")
        self._caption(src, node, c["text"])
        self._image(src, c["image"])
        return c

    def _chain(self, node: str, port: str, stages: tuple[str, ...]) -> list[str]:
        """The stages of ``stages`` read one after the other from ``node.port`` (each by its ``port``)."""
        chain = []
        while True:
            nxt = [r for r in self.readers(node, port) if self.type(r) in stages and r not in chain]
            if len(nxt) != 1:
                return chain
            node = nxt[0]
            chain.append(node)

    def _caption(self, src: str, concept: str, t: dict) -> None:
        how = self.p(concept, "caption")
        chain = self._chain(src, "text_path", CAPTION_STAGES[:1])
        if how == "filename":
            t["prompt_source"] = "filename"
            start = src, "caption"
        elif how == "sidecar" and chain:
            t["prompt_source"] = "sample"
            self.claim(chain[0], "a concept's captions")
            self.expect(chain[0], "lines", "random", "OneTrainer draws one line of a caption file per epoch")
            start = chain[0], "caption"
        else:
            self.fail(concept, "caption", f"{how}: OneTrainer reads each image's .txt (through data.load_text, "
                                          "lines random) or the file name")
            return
        stages = self._chain(*start, CAPTION_STAGES[1:])
        kinds = [self.type(n) for n in stages]
        if kinds not in ([], ["data.shuffle_tags"], ["data.drop_tags"], ["data.shuffle_tags", "data.drop_tags"]):
            self.fail(stages[0], None, "OneTrainer shuffles tags once and then drops them, in that order")
        delims = set()
        for n in stages:
            self.claim(n, "a caption stage")
            delims.add((self.p(n, "delimiter"), int(self.p(n, "keep_first"))))
            if self.type(n) == "data.shuffle_tags":
                t["enable_tag_shuffling"] = True
            else:
                t["tag_dropout_enable"], t["tag_dropout_mode"] = True, "FULL"
                t["tag_dropout_probability"] = float(self.p(n, "probability"))
        if len(delims) > 1:
            self.fail(stages[-1], "delimiter", "the tag shuffle and dropout of a concept share one delimiter and "
                                               "keep count in OneTrainer")
        if delims:
            t["tag_delimiter"], t["keep_tags_count"] = next(iter(delims))

    def _image(self, src: str, im: dict) -> None:
        loads = [r for r in self.readers(src, "path") if self.type(r) == "data.load_image"]
        buckets = [r for r in self.readers(src, "size") if self.type(r) == "data.aspect_bucket"]
        if len(loads) != 1 or len(buckets) != 1:
            self.fail(src, None, "a concept's branch loads its images once (data.load_image) into one "
                                 "data.aspect_bucket")
            return
        load, bucket = self.claim(loads[0], "image loading"), self.claim(buckets[0], "a concept's buckets")
        self.buckets.append((bucket, im))
        if self.masked:
            masks = [r for r in self.readers(src, "mask_path") if self.type(r) == "data.load_mask"]
            for m in masks:
                self.claim(m, "mask loading")
        crops = [r for r in self.readers(load, "image") if self.type(r) == "data.scale_crop"]
        if len(crops) != 1:
            self.fail(load, None, "OneTrainer crops each image to its bucket once (data.scale_crop)")
            return
        crop = self.claim(crops[0], "the crop")
        im["enable_crop_jitter"] = self.p(crop, "crop") == "random"
        stages = self._chain(crop, "image", IMAGE_STAGES)
        kinds = [self.type(n) for n in stages]
        if kinds != sorted(kinds, key=IMAGE_STAGES.index) or len(set(kinds)) != len(kinds):
            self.fail(stages[0], None, "OneTrainer augments once each, in the order flip, rotate, brightness, "
                                       "contrast, saturation, hue")
        for n in stages:
            self.claim(n, "an augmentation")
            t = self.type(n)
            prob = self.p(n, "probability")
            if t == "data.random_flip":
                if X.same(prob, 0.5):
                    im["enable_random_flip"] = True
                elif X.same(prob, 1.0):
                    im["enable_fixed_flip"] = True
                else:
                    self.fail(n, "probability", f"{prob!r}: OneTrainer flips at random (0.5) or always (1.0)")
                continue
            if not X.same(prob, 1.0):
                self.fail(n, "probability", f"{prob!r}: OneTrainer's random augmentations apply to every "
                                            "image (probability 1.0), with a random strength")
            if t == "data.random_rotate":
                im["enable_random_rotate"] = True
                im["random_rotate_max_angle"] = float(self.p(n, "max_angle"))
            else:
                stem = t.rpartition("_")[2]
                im[f"enable_random_{stem}"] = True
                im[f"random_{stem}_max_strength"] = float(self.p(n, "strength"))
        last = stages[-1] if stages else crop
        for r in self.readers(last, "image"):
            if self.type(r) == "data.to_tensor":
                self.claim(r, "the image tensor")

    def resolutions(self) -> None:
        """The global resolution and bucketing from the concepts' buckets; others become overrides."""
        if not self.buckets:
            return
        spec = self.r.get("data.aspect_bucket").params
        default_aspects = spec["aspects"].default
        all_square = all(list(self.p(b, "aspects")) == ["1:1"] for b, _ in self.buckets)
        bucketing = not all_square
        self.out["aspect_ratio_bucketing"] = bucketing
        texts = []
        for bucket, im in self.buckets:
            params = self.params(bucket, "resolution", "resolutions", "quantization", "aspects")
            texts.append(self.convert(bucket, X.resolution, params, default_aspects, bucketing, self.model_type))
        main = texts[0] or "512"
        self.out["resolution"] = main
        for text, (_, im) in zip(texts, self.buckets):
            if text is not None and text != main:
                im["enable_resolution_override"], im["resolution_override"] = True, text

    # -- hooks and savers ------------------------------------------------------------------------------------------
    def hooks(self) -> None:
        o = self.out
        o.update(tensorboard=False, backup_after=0, backup_after_unit="NEVER", save_every=0, save_every_unit="NEVER",
                 validation=False, ema="OFF", sample_after=0, sample_after_unit="NEVER", backup_before_save=False)
        hooks = [lk.node for lk in self.links(self.loop, "hooks") if lk.node in self.g.nodes]
        kinds = {}
        for h in hooks:
            kinds.setdefault(self.type(h), []).append(h)
        for t, nodes in kinds.items():
            if len(nodes) > 1 and t != "train.backup_hook":
                self.fail(nodes[1], None, f"a second {t}: OneTrainer has one")
        save_hook = kinds.get("train.save_hook", [None])[0]
        backups = list(kinds.get("train.backup_hook", []))
        if save_hook is not None:
            i = hooks.index(save_hook)
            after = hooks[i + 1] if i + 1 < len(hooks) else None
            if after in backups and all(X.same(self.p(after, k), self.p(save_hook, k))
                                        for k in ("every", "unit", "skip_first")) and X.same(self.p(after, "keep"), 3):
                self.claim(after, "the backup before each save")
                o["backup_before_save"] = True
                backups.remove(after)
        if len(backups) > 1:
            self.fail(backups[1], None, "a second backup schedule: OneTrainer has one (and one before each save)")
        for h in backups[:1]:
            self.claim(h, "the backups")
            got = self._schedule_of(h, "backup")
            if got:
                o["backup_after"], o["backup_after_unit"], _ = got
            keep = int(self.p(h, "keep"))
            o["rolling_backup"] = keep != 10000
            if keep != 10000:
                o["rolling_backup_count"] = keep
        for h in hooks:
            t = self.type(h)
            if t == "train.ema":
                self.claim(h, "the EMA")
                o["ema"] = "CPU" if self.p(h, "device") == "cpu" else "GPU"
                o["ema_decay"] = float(self.p(h, "decay"))
                o["ema_update_step_interval"] = int(self.p(h, "interval"))
            elif t == "train.sample_hook":
                self._samples(h)
            elif t == "train.validation_hook":
                self.claim(h, "the validation")
                o["validation"] = True
                got = self._schedule_of(h, "validate")
                if got:
                    o["validate_after"], o["validate_after_unit"], _ = got
                o["concepts"] += self.stream(self.source(h, "batches", "data.batches"), "VALIDATION")
            elif t == "train.tensorboard":
                self.claim(h, "TensorBoard")
                o["tensorboard"] = True
                o["samples_to_tensorboard"] = bool(self.p(h, "images"))
        self.resolutions()
        self.save_hook = save_hook

    def _schedule_of(self, hook: str, action: str):
        return self.convert(hook, X.hook_schedule, action, self.p(hook, "every"), self.p(hook, "unit"),
                            self.p(hook, "skip_first"), self.accum)

    def _samples(self, hook: str) -> None:
        o, fam = self.out, self.family
        self.claim(hook, "the samples")
        got = self._schedule_of(hook, "sample")
        if got:
            o["sample_after"], o["sample_after_unit"], o["sample_skip_first"] = got
        if o["ema"] != "OFF" or any(self.type(lk.node) == "train.ema" for lk in self.links(self.loop, "hooks")):
            o["non_ema_sampling"] = bool(self.p(hook, "non_ema"))
        schedulers = {v: k for k, v in reversed(list(fam.schedulers.items()))}
        for lk in self.links(hook, "samplers"):
            node = lk.node
            if node not in self.g.nodes or self.type(node) != _name(fam.sampler):
                self.fail(hook, "samplers", f"{lk}: OneTrainer samples with {fam.sampler} only")
                continue
            self.claim(node, "a sample")
            if self.link(node, "model") is not None:
                self.fail(node, "model", "OneTrainer samples the model in training (leave model unlinked)")
            spec = self.spec(node).params
            seed = self.p(node, "seed")
            base = D.sample_defaults(self.model_type)
            for k, param in (("negative_prompt", "negative_prompt"), ("diffusion_steps", "steps"),
                             ("cfg_scale", "cfg"), ("width", "width"), ("height", "height")):
                if param in spec:
                    base[k] = self.p(node, param)
            if "scheduler" in spec:
                scheduler = self.p(node, "scheduler")
                if scheduler not in schedulers:
                    self.fail(node, "scheduler", f"{scheduler}: OneTrainer has no such noise scheduler")
                base["noise_scheduler"] = schedulers.get(scheduler, base["noise_scheduler"])
            if "clip_skip" in spec:
                self.clip_skips.append((node, self.p(node, "clip_skip")))
            if "guidance" in spec and "cfg" not in spec:  # a guidance-distilled model's sampler: cfg_scale
                base["cfg_scale"] = float(self.p(node, "guidance"))
            if "max_length" in spec and self.family.uses(SEQUENCE_LENGTH):
                self.lengths.append((node, self.p(node, "max_length")))
            for i, prompt in enumerate(self.p(node, "prompts")):
                sample = {**base, "prompt": str(prompt)}
                if seed == -1:
                    sample["random_seed"] = True
                else:
                    sample["seed"] = int(seed) + i
                o["samples"].append(sample)

    def saver(self) -> None:
        o, fam = self.out, self.family
        finals = [c for c, port, lk in self.g.consumers(self.loop) if port == "model"]
        choices = [(fmt, t) for (m, fmt), t in fam.savers.items() if m == self.method]
        savers = [n for n in finals if any(_name(t) == self.type(n) for _, t in choices)]
        if len(savers) != 1:
            self.fail(self.loop, None, f"OneTrainer saves the trained model once: link train.trained to one "
                                       f"of {', '.join(sorted({_name(t) for _, t in choices}))}")
            for n in savers:
                self.claim(n, "a saver")
            self._periodic(None)
            return
        node = self.claim(savers[0], "the saver")
        ordered = sorted(choices, key=lambda c: c[0] == "SAFETENSORS" and self.method != "EMBEDDING")
        fmt = None
        for f, t in ordered:
            extra = dict(p.split("=", 1) for p in t.partition(" ")[2].split())
            if _name(t) == self.type(node) and all(self.p(node, k) == v for k, v in extra.items()):
                fmt = f
                break
        if fmt is None:
            self.fail(node, "formats", f"{self.p(node, 'formats')!r}: OneTrainer writes one LoRA format")
            self._periodic(None)
            return
        o["output_model_format"] = fmt
        name, folder = self.p(node, "name"), self.p(node, "folder")
        if not name or "/" in str(name) or "\\" in str(name):
            self.fail(node, "name", f"{name!r}: OneTrainer names the output file (give a plain name)")
            name = "model"
        ext = "" if fmt == "DIFFUSERS" else ".safetensors"
        if folder is None:
            o["output_model_destination"] = f"models/{name}{ext}"
        elif not os.path.isabs(str(folder)):
            self.fail(node, "folder", f"{folder!r}: relative to the run folder; OneTrainer's destination is an "
                                      "absolute path (or relative to OneTrainer's own folder)")
        elif fmt == "DIFFUSERS" and os.path.basename(str(folder).rstrip("/\\")) == name:
            o["output_model_destination"] = str(folder)
        else:
            o["output_model_destination"] = os.path.join(str(folder), f"{name}{ext or '.safetensors'}")
        spec = self.spec(node).params
        if "dtype" in spec:
            dtype = self.p(node, "dtype")
            if dtype not in X.FLOATS:
                self.fail(node, "dtype", f"{dtype!r}: OneTrainer saves float32, float16 or bfloat16")
            o["output_dtype"] = X.FLOATS.get(dtype, "FLOAT_32")
        self._periodic(node)

    def _periodic(self, final: str | None) -> None:
        """The save hook and its saver (``final``: the final saver it must copy; None: only account for them)."""
        o, hook = self.out, self.save_hook
        if hook is None:
            return
        self.claim(hook, "the periodic saves")
        got = self._schedule_of(hook, "save")
        if got:
            if got[1] == "NEVER":
                self.fail(hook, "every", "0 (only on command): OneTrainer's saves are periodic or off")
            o["save_every"], o["save_every_unit"], o["save_skip_first"] = got
        savers = self.links(hook, "savers")
        if final is None:
            for lk in savers:
                if lk.node in self.g.nodes:
                    self.claim(lk.node, "a periodic saver")
            return
        if len(savers) != 1 or savers[0].node not in self.g.nodes:
            self.fail(hook, "savers", "OneTrainer's periodic saves write the output model once each time")
            return
        node = self.claim(savers[0].node, "the periodic saver")
        if self.type(node) != self.type(final):
            self.fail(node, None, f"OneTrainer's periodic saves have the final saver's type {self.type(final)}")
            return
        for key in self.spec(node).params:
            if key != "name":
                self.expect(node, key, self.p(final, key), "OneTrainer's periodic saves are the final save's")
        name, final_name = str(self.p(node, "name")), str(self.p(final, "name"))
        if not name.endswith(final_name):
            self.fail(node, "name", f"{name!r}: OneTrainer names periodic saves <prefix><the output's name "
                                    f"{final_name!r}>")
        else:
            o["save_filename_prefix"] = name[:len(name) - len(final_name)]

    def sequence_length(self) -> None:
        """The T5 token count the encoders and samplers share (a family that ``uses`` the key)."""
        if not self.lengths:
            return
        first = self.lengths[0]
        for node, n in self.lengths[1:]:
            if n != first[1]:
                self.fail(node, "max_length", f"{n}: OneTrainer has one {SEQUENCE_LENGTH} ({first[0]} has "
                                              f"{first[1]})")
        self.out[SEQUENCE_LENGTH] = int(first[1])

    def loader_extras(self) -> None:
        """Loader params a family's ``loader_params`` sets from a part's key (Flux.1: guidance)."""
        spec = self.spec(self.loader).params
        if "guidance" in spec and "transformer" in self.family.parts:
            self.out["transformer"]["guidance_scale"] = float(self.p(self.loader, "guidance"))

    def clip_skip(self) -> None:
        skips = list(self.clip_skips)
        if "clip_skip" in self.spec(self.setup).params:
            skips.insert(0, (self.setup, self.p(self.setup, "clip_skip")))
        values = {int(v) for _, v in skips}
        if len(values) > 1:
            for node, v in skips[1:]:
                if v != skips[0][1]:
                    self.fail(node, "clip_skip", f"{v}: OneTrainer has one layer skip for training and samples "
                                                 f"({skips[0][0]} has {skips[0][1]})")
        if skips:
            got = self.convert(skips[0][0], X.layer_skips, self.model_type, int(skips[0][1]))
            if got:
                self.out.update(got)


def versioned(config: dict) -> dict:
    """``__version`` on every nested config object, as OneTrainer writes them (§1.2): a concept without one
    would be migrated from version 0 on load."""
    for key, value in config.items():
        if isinstance(value, dict) and key in (*D.MODEL_PARTS, "quantization", "embedding", "optimizer", "cloud"):
            config[key] = {"__version": 0, **value}
    config["concepts"] = [{"__version": D.CONCEPT_VERSION, **c, "image": {"__version": 0, **c["image"]},
                           "text": {"__version": 0, **c["text"]}} for c in config["concepts"]]
    config["samples"] = [{"__version": 0, **s} for s in config["samples"]]
    return config


class _Quiet:
    """Stands in for an import when a family's ``setup_params`` is asked what it always writes: the config
    exported so far, and a report that keeps nothing."""

    def __init__(self, values: dict, method: str):
        self.v, self.method, self.report = values, method, self

    def __getattr__(self, name):
        if name in ("mapped", "unsupported", "not_needed", "note"):
            return lambda *a, **k: None
        raise AttributeError(name)


def export(graph: Graph, registry: Registry | None = None, warnings: list | None = None) -> dict:
    """The OneTrainer config (a full, current-version dict with concepts and samples embedded) of a graph
    whose nodes all map. ValueError listing every node and param that does not, one line each.
    ``warnings`` (a list) receives notes on values that map with a small change."""
    ex = Export(graph, registry or default_registry())
    out = ex.run()
    if ex.problems:
        raise ValueError(f"cannot export {graph.name!r} as a OneTrainer config; {len(ex.problems)} "
                         f"{'things do' if len(ex.problems) != 1 else 'thing does'} not map:\n  " + "\n  ".join(ex.problems))
    if warnings is not None:
        warnings.extend(ex.warnings)
    return out


def export_file(graph_path: str | os.PathLike, out_path: str | os.PathLike) -> list[str]:
    """Load a graph file, export it and write the config JSON atomically; returns the warnings."""
    from ...fileio import atomic_write_text
    from ...graph_file import GraphFileError, load_graph

    try:
        graph = load_graph(graph_path)
    except GraphFileError as e:
        raise ValueError(str(e)) from None
    warnings: list[str] = []
    config = export(graph, warnings=warnings)
    atomic_write_text(Path(out_path), json.dumps(config, indent=4) + "\n")
    return warnings
