"""OneTrainer's default values, as listed in shared/reference/onetrainer-config.md (HEAD 23df3832).

Plain data: JSON-shaped values (enums as member names). ``None`` for keys whose default is random
(uuid, concept seed); those are listed in ``RANDOM_KEYS`` and never count as changed.
"""

CURRENT_VERSION = 11
CONCEPT_VERSION = 2

# TrainConfig scalar/list keys (§2.1); sub-objects are assembled in train_config_defaults().
# train_device: OneTrainer writes "cuda" on a GPU machine, "cpu" elsewhere; "cuda" is taken here.
TOP_LEVEL = {'training_method': 'FINE_TUNE',
 'model_type': 'STABLE_DIFFUSION_15',
 'debug_mode': False,
 'debug_dir': 'debug',
 'workspace_dir': 'workspace/run',
 'cache_dir': 'workspace-cache/run',
 'huggingface_cache_dir': '',
 'offline_mode': False,
 'tensorboard': True,
 'tensorboard_expose': False,
 'tensorboard_always_on': False,
 'tensorboard_port': 6006,
 'validation': False,
 'validate_after': 1,
 'validate_after_unit': 'EPOCH',
 'continue_last_backup': False,
 'prevent_overwrites': False,
 'include_train_config': 'NONE',
 'multi_gpu': False,
 'device_indexes': '',
 'gradient_reduce_precision': 'FLOAT_32_STOCHASTIC',
 'fused_gradient_reduce': True,
 'async_gradient_reduce': True,
 'async_gradient_reduce_buffer': 100,
 'base_model_name': 'stable-diffusion-v1-5/stable-diffusion-v1-5',
 'output_dtype': 'FLOAT_32',
 'output_model_format': 'SAFETENSORS',
 'output_model_destination': 'models/model.safetensors',
 'async_offloading': True,
 'force_circular_padding': False,
 'compile': False,
 'concept_file_name': 'training_concepts/concepts.json',
 'concepts': None,
 'aspect_ratio_bucketing': True,
 'latent_caching': True,
 'clear_cache_before_training': True,
 'learning_rate': 3e-06,
 'epochs': 100,
 'batch_size': 1,
 'gradient_accumulation_steps': 1,
 'dataloader_threads': 2,
 'train_device': 'cuda',
 'temp_device': 'cpu',
 'train_dtype': 'FLOAT_16',
 'fallback_train_dtype': 'BFLOAT_16',
 'enable_autocast_cache': True,
 'only_cache': False,
 'resolution': '512',
 'frames': '25',
 'attention_mechanism': 'SDP',
 'learning_rate_scaler': 'NONE',
 'clip_grad_norm': 1.0,
 'learning_rate_scheduler': 'CONSTANT',
 'custom_learning_rate_scheduler': None,
 'scheduler_params': [],
 'learning_rate_warmup_steps': 200.0,
 'learning_rate_cycles': 1.0,
 'learning_rate_min_factor': 0.0,
 'ema': 'OFF',
 'ema_decay': 0.999,
 'ema_update_step_interval': 5,
 'mse_strength': 1.0,
 'mae_strength': 0.0,
 'log_cosh_strength': 0.0,
 'huber_strength': 0.0,
 'huber_delta': 1.0,
 'vb_loss_strength': 1.0,
 'loss_weight_fn': 'CONSTANT',
 'loss_weight_strength': 5.0,
 'loss_scaler': 'NONE',
 'offset_noise_weight': 0.0,
 'generalized_offset_noise': False,
 'perturbation_noise_weight': 0.0,
 'rescale_noise_scheduler_to_zero_terminal_snr': False,
 'force_v_prediction': False,
 'force_epsilon_prediction': False,
 'min_noising_strength': 0.0,
 'max_noising_strength': 1.0,
 'timestep_distribution': 'UNIFORM',
 'noising_weight': 0.0,
 'noising_bias': 0.0,
 'timestep_shift': 1.0,
 'dynamic_timestep_shifting': False,
 'text_encoder_layer_skip': 0,
 'text_encoder_sequence_length': 512,
 'text_encoder_2_layer_skip': 0,
 'text_encoder_2_sequence_length': 77,
 'text_encoder_3_layer_skip': 0,
 'text_encoder_4_layer_skip': 0,
 'masked_training': False,
 'unmasked_probability': 0.1,
 'unmasked_weight': 0.1,
 'normalize_masked_area_loss': False,
 'masked_prior_preservation_weight': 0.0,
 'custom_conditioning_image': False,
 'layer_filter': '',
 'layer_filter_preset': 'full',
 'layer_filter_regex': False,
 'embedding_learning_rate': None,
 'preserve_embedding_norm': False,
 'additional_embeddings': [],
 'embedding_weight_dtype': 'FLOAT_32',
 'dropout_probability': 0.0,
 'peft_type': 'LORA',
 'lora_model_name': '',
 'lora_rank': 16,
 'lora_alpha': 1.0,
 'lora_decompose': False,
 'lora_decompose_norm_epsilon': True,
 'lora_decompose_output_axis': False,
 'lora_weight_dtype': 'FLOAT_32',
 'bundle_additional_embeddings': True,
 'oft_block_size': 32,
 'oft_block_share': False,
 'oft_scaled': False,
 'lokr_dim': 16,
 'lokr_decompose_both': False,
 'lokr_decompose_factor': -1,
 'lokr_use_tucker': False,
 'lokr_weight_decompose': False,
 'lokr_dora_on_output': True,
 'lokr_full_matrix': False,
 'lokr_vec_trick': True,
 'optimizer_defaults': {},
 'sample_definition_file_name': 'training_samples/samples.json',
 'samples': None,
 'sample_after': 10,
 'sample_after_unit': 'MINUTE',
 'sample_skip_first': 0,
 'sample_image_format': 'JPG',
 'sample_video_format': 'MP4',
 'sample_audio_format': 'MP3',
 'samples_to_tensorboard': True,
 'non_ema_sampling': True,
 'backup_after': 30,
 'backup_after_unit': 'MINUTE',
 'rolling_backup': False,
 'rolling_backup_count': 3,
 'backup_before_save': True,
 'save_every': 0,
 'save_every_unit': 'NEVER',
 'save_skip_first': 0,
 'save_filename_prefix': ''}

# TrainModelPartConfig (§2.2).
MODEL_PART = {'model_name': '',
 'include': True,
 'train': True,
 'stop_training_after': None,
 'stop_training_after_unit': 'NEVER',
 'learning_rate': None,
 'weight_dtype': 'FLOAT_32',
 'dropout_probability': 0.0,
 'train_embedding': True,
 'attention_mask': False,
 'guidance_scale': 1.0,
 'gradient_checkpointing': True,
 'offload_fraction': 0.0,
 'activation_offloading': False}

# QuantizationConfig (§2.3).
QUANTIZATION = {'layer_filter': '',
 'layer_filter_preset': 'full',
 'layer_filter_regex': False,
 'svd_dtype': 'NONE',
 'svd_rank': 16,
 'cache_dir': None}

# TrainEmbeddingConfig (§2.4); uuid is a fresh UUID4 in OneTrainer.
EMBEDDING = {'uuid': None,
 'model_name': '',
 'placeholder': '<embedding>',
 'train': True,
 'stop_training_after': None,
 'stop_training_after_unit': 'NEVER',
 'token_count': 1,
 'initial_embedding_text': '*',
 'is_output_embedding': False}

# CloudConfig (§2.5).
CLOUD = {'enabled': False,
 'type': 'RUNPOD',
 'file_sync': 'NATIVE_SCP',
 'create': False,
 'name': 'OneTrainer',
 'tensorboard_tunnel': True,
 'sub_type': '',
 'gpu_type': '',
 'volume_size': 100,
 'min_download': 0,
 'remote_dir': '/workspace',
 'huggingface_cache_dir': '/workspace/huggingface_cache',
 'onetrainer_dir': '/workspace/OneTrainer',
 'install_cmd': 'git clone https://github.com/Nerogar/OneTrainer',
 'install_onetrainer': True,
 'update_onetrainer': True,
 'detach_trainer': False,
 'run_id': 'job1',
 'download_samples': True,
 'download_output_model': True,
 'download_saves': True,
 'download_backups': False,
 'download_tensorboard': False,
 'delete_workspace': False,
 'on_finish': 'NONE',
 'on_error': 'NONE',
 'on_detached_finish': 'NONE',
 'on_detached_error': 'NONE'}

# TrainOptimizerConfig (§3.2): the bare defaults the CLI uses.
OPTIMIZER = {'optimizer': 'ADAMW',
 'adam_w_mode': False,
 'alpha': None,
 'amsgrad': False,
 'beta1': None,
 'beta2': None,
 'beta3': None,
 'bias_correction': False,
 'block_wise': False,
 'capturable': False,
 'centered': False,
 'clip_threshold': None,
 'd0': None,
 'd_coef': None,
 'dampening': None,
 'decay_rate': None,
 'decouple': False,
 'differentiable': False,
 'eps': None,
 'eps2': None,
 'foreach': False,
 'fsdp_in_use': False,
 'fused': False,
 'fused_back_pass': False,
 'growth_rate': None,
 'initial_accumulator_value': None,
 'initial_accumulator': None,
 'is_paged': False,
 'log_every': None,
 'lr_decay': None,
 'max_unorm': None,
 'maximize': False,
 'min_8bit_size': None,
 'quant_block_size': None,
 'momentum': None,
 'nesterov': False,
 'no_prox': False,
 'optim_bits': None,
 'percentile_clipping': None,
 'r': None,
 'relative_step': False,
 'safeguard_warmup': False,
 'scale_parameter': False,
 'stochastic_rounding': True,
 'use_bias_correction': False,
 'use_triton': False,
 'warmup_init': False,
 'weight_decay': None,
 'weight_lr_power': None,
 'decoupled_decay': False,
 'fixed_decay': False,
 'rectify': False,
 'degenerated_to_sgd': False,
 'k': None,
 'xi': None,
 'n_sma_threshold': None,
 'ams_bound': False,
 'adanorm': False,
 'adam_debias': False,
 'slice_p': None,
 'cautious': False,
 'weight_decay_by_lr': True,
 'prodigy_steps': None,
 'use_speed': False,
 'split_groups': True,
 'split_groups_mean': True,
 'factored': True,
 'factored_fp32': True,
 'use_stableadamw': True,
 'use_cautious': False,
 'use_grams': False,
 'use_adopt': False,
 'd_limiter': True,
 'use_schedulefree': True,
 'use_orthograd': False,
 'nnmf_factor': False,
 'orthogonal_gradient': False,
 'use_atan2': False,
 'use_AdEMAMix': False,
 'beta3_ema': None,
 'alpha_grad': None,
 'beta1_warmup': None,
 'min_beta1': None,
 'Simplified_AdEMAMix': False,
 'kourkoutas_beta': False,
 'schedulefree_c': None,
 'ns_steps': None,
 'MuonWithAuxAdam': False,
 'muon_hidden_layers': None,
 'muon_adam_regex': False,
 'muon_adam_lr': None,
 'muon_te1_adam_lr': None,
 'muon_te2_adam_lr': None,
 'muon_adam_config': {},
 'rms_rescaling': True,
 'normuon_variant': False,
 'beta2_normuon': None,
 'low_rank_ortho': False,
 'ortho_rank': None,
 'accelerated_ns': False,
 'cautious_wd': False,
 'approx_mars': False,
 'auto_kappa_p': False,
 'compile': False}

# ConceptConfig (§4.1) without its image/text sub-objects; seed is random in OneTrainer.
CONCEPT = {'name': '',
 'path': '',
 'seed': None,
 'enabled': True,
 'type': 'STANDARD',
 'include_subdirectories': False,
 'image_variations': 1,
 'text_variations': 1,
 'balancing': 1.0,
 'balancing_strategy': 'REPEATS',
 'loss_weight': 1.0,
 'concept_stats': {}}

# ConceptImageConfig (§4.1).
CONCEPT_IMAGE = {'enable_crop_jitter': True,
 'enable_random_flip': False,
 'enable_fixed_flip': False,
 'enable_random_rotate': False,
 'enable_fixed_rotate': False,
 'random_rotate_max_angle': 0.0,
 'enable_random_brightness': False,
 'enable_fixed_brightness': False,
 'random_brightness_max_strength': 0.0,
 'enable_random_contrast': False,
 'enable_fixed_contrast': False,
 'random_contrast_max_strength': 0.0,
 'enable_random_saturation': False,
 'enable_fixed_saturation': False,
 'random_saturation_max_strength': 0.0,
 'enable_random_hue': False,
 'enable_fixed_hue': False,
 'random_hue_max_strength': 0.0,
 'enable_resolution_override': False,
 'resolution_override': '512',
 'enable_random_circular_mask_shrink': False,
 'enable_random_mask_rotate_crop': False}

# ConceptTextConfig (§4.1).
CONCEPT_TEXT = {'prompt_source': 'sample',
 'prompt_path': '',
 'enable_tag_shuffling': False,
 'tag_delimiter': ',',
 'keep_tags_count': 1,
 'tag_dropout_enable': False,
 'tag_dropout_mode': 'FULL',
 'tag_dropout_probability': 0.0,
 'tag_dropout_special_tags_mode': 'NONE',
 'tag_dropout_special_tags': '',
 'tag_dropout_special_tags_regex': False,
 'caps_randomize_enable': False,
 'caps_randomize_mode': 'capslock, title, first, random',
 'caps_randomize_probability': 0.0,
 'caps_randomize_lowercase': False}

# SampleConfig (§4.2), generic (no model type given).
SAMPLE = {'enabled': True,
 'prompt': '',
 'negative_prompt': '',
 'height': 512,
 'width': 512,
 'frames': 1,
 'length': 10.0,
 'seed': 42,
 'random_seed': False,
 'diffusion_steps': 30,
 'cfg_scale': 7.0,
 'noise_scheduler': 'DDIM',
 'text_encoder_1_layer_skip': 0,
 'text_encoder_1_sequence_length': None,
 'text_encoder_2_layer_skip': 0,
 'text_encoder_2_sequence_length': None,
 'text_encoder_3_layer_skip': 0,
 'text_encoder_4_layer_skip': 0,
 'transformer_attention_mask': False,
 'force_last_timestep': False,
 'sample_inpainting': False,
 'base_image_path': '',
 'mask_image_path': ''}

MODEL_PARTS = (
    "unet", "prior", "transformer", "unconditional_transformer", "text_encoder", "text_encoder_2",
    "text_encoder_3", "text_encoder_4", "vae", "effnet_encoder", "decoder", "decoder_text_encoder",
    "decoder_vqgan",
)

# Per-part differences from MODEL_PART (§2.2).
_DENOISER = {"stop_training_after": 0}
_TEXT_ENCODER = {"stop_training_after": 30, "stop_training_after_unit": "EPOCH"}
PART_OVERRIDES = {
    "unet": _DENOISER, "prior": _DENOISER, "transformer": _DENOISER,
    "unconditional_transformer": {"train": False, "gradient_checkpointing": False},
    "text_encoder": _TEXT_ENCODER, "text_encoder_2": _TEXT_ENCODER,
    "text_encoder_3": _TEXT_ENCODER, "text_encoder_4": _TEXT_ENCODER,
}

# Keys (dotted) whose OneTrainer default is random: never reported as changed.
RANDOM_KEYS = frozenset({"embedding.uuid"})
RANDOM_CONCEPT_KEYS = frozenset({"seed"})

# Keys that hold credentials: dropped on read, never kept (§1.7).
SECRET_KEYS = frozenset({"secrets"})

# Model-specific SampleConfig defaults (§4.2 footnote 1), by family of model_type.
_SD1 = {"cfg_scale": 7.5, "noise_scheduler": "EULER_A"}
_SD2 = {"width": 768, "height": 768, "cfg_scale": 7.5}
_SDXL = {"width": 1024, "height": 1024, "cfg_scale": 7.5, "noise_scheduler": "EULER_A"}


def _big(steps, cfg, **extra):
    return {"width": 1024, "height": 1024, "diffusion_steps": steps, "cfg_scale": cfg, **extra}


SAMPLE_FAMILY_OVERRIDES = {
    "STABLE_DIFFUSION_15": _SD1, "STABLE_DIFFUSION_15_INPAINTING": _SD1,
    "STABLE_DIFFUSION_20": _SD2, "STABLE_DIFFUSION_20_BASE": _SD2, "STABLE_DIFFUSION_20_INPAINTING": _SD2,
    "STABLE_DIFFUSION_20_DEPTH": _SD2, "STABLE_DIFFUSION_21": _SD2, "STABLE_DIFFUSION_21_BASE": _SD2,
    "STABLE_DIFFUSION_XL_10_BASE": _SDXL, "STABLE_DIFFUSION_XL_10_BASE_INPAINTING": _SDXL,
    "STABLE_DIFFUSION_3": _big(28, 7.0), "STABLE_DIFFUSION_35": _big(28, 7.0),
    "FLUX_DEV_1": _big(30, 3.5), "FLUX_FILL_DEV_1": _big(30, 3.5),
    "CHROMA_1": _big(30, 3.5), "FLUX_2": _big(30, 4.0), "QWEN": _big(25, 3.5),
    "ANIMA": _big(25, 4.0, negative_prompt="worst quality, low quality, score_1, score_2, score_3, artist name"),
    "KREA_2": _big(28, 3.5), "Z_IMAGE": _big(28, 4.0),
    "HUNYUAN_VIDEO": {"width": 848, "height": 480, "cfg_scale": 6.0},
    "SANA": _big(20, 4.5), "HI_DREAM_FULL": _big(28, 5.0),
    "PIXART_ALPHA": _big(25, 4.5), "PIXART_SIGMA": _big(25, 4.5),
    "WUERSTCHEN_2": _big(25, 4.0), "STABLE_CASCADE_1": _big(25, 4.0), "ERNIE": _big(25, 4.0),
    "IDEOGRAM_4": _big(25, 3.0),
}


def model_part_defaults(part):
    """The default TrainModelPartConfig dict of one model part."""
    return {**MODEL_PART, **PART_OVERRIDES.get(part, {})}


def train_config_defaults():
    """A fresh, complete default TrainConfig dict (secrets excluded), like ``default_values()``."""
    config = {}
    for key, value in TOP_LEVEL.items():
        config[key] = _copy(value)
    for part in MODEL_PARTS:
        config[part] = model_part_defaults(part)
    config["quantization"] = dict(QUANTIZATION)
    config["embedding"] = dict(EMBEDDING)
    config["optimizer"] = _copy(OPTIMIZER)
    config["cloud"] = dict(CLOUD)
    return config


def concept_defaults():
    """A fresh default ConceptConfig dict with its image and text sub-objects."""
    return {"image": dict(CONCEPT_IMAGE), "text": dict(CONCEPT_TEXT), **_copy(CONCEPT)}


def sample_defaults(model_type=None):
    """A fresh default SampleConfig dict; model-specific where OneTrainer has them (§4.2)."""
    return {**SAMPLE, **SAMPLE_FAMILY_OVERRIDES.get(model_type, {})}


def _copy(value):
    """Deep copy of a JSON-shaped value."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value

