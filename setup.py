"""fourm-hf: 4M (Massively Multimodal Masked Modeling) as a Hugging Face model package.

torch is deliberately given as a range that any recent build satisfies: install the build you
want first (CPU: ``pip install torch==2.13.0``; GPU: the CUDA wheel for your driver), and
``pip install -e .`` will keep it instead of pulling another one.
"""

from setuptools import find_packages, setup

setup(
    name="fourm-hf",
    version="0.1.0",
    description="4M: Massively Multimodal Masked Modeling as a Hugging Face transformers model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # The bundled checkpoint (model, processor, VQ-VAEs, model card; no code: it loads with the package)
    # ships inside the package.
    package_data={"fourm_hf": [
        "checkpoints/fourm-scenes64/*.json", "checkpoints/fourm-scenes64/*.safetensors",
        "checkpoints/fourm-scenes64/README.md", "checkpoints/fourm-scenes64/vqvae/*/*",
    ]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "datasets>=4.0",
        "accelerate>=1.0",
        "evaluate>=0.4",
        "numpy>=1.24",
        "pillow>=10.0",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        # DiVAE tokenizers sample with diffusers' DDIM / DDPM schedulers (imported only when decoding).
        "diffusers>=0.30",
        # the standard implementations under training/metrics: BLEU (sacreBLEU) and COCO box AP
        "sacrebleu>=2.4",
        "pycocotools>=2.0.7",
    ],
    extras_require={
        # hypothesis: property tests of bad inputs (tests/test_bad_inputs_*.py); selenium: the web demo's browser test (tests/test_web_demo.py); parameterized: imported by
        # transformers' common test mixins (tests/transformers_common.py); scipy: chi-square of the masking mixtures
        "test": ["pytest>=8.0", "selenium>=4.20", "parameterized>=0.9", "hypothesis>=6.100", "scipy>=1.10"],
        "peft": ["peft>=0.13"],
        "demo": ["scikit-image>=0.22"],
        # fourm-hf demo --web. Gradio 6 takes theme/css in launch(); it caps pillow below 13.
        "web": ["gradio>=6.0,<7", "scikit-image>=0.22"],
        # ZeRO-2/3 through accelerate launch (docs/distributed.md); an sdist built against the installed torch,
        # so install it with: pip install --no-build-isolation 'fourm-hf[deepspeed]'
        "deepspeed": ["deepspeed>=0.19"],
        "all": ["pytest>=8.0", "selenium>=4.20", "parameterized>=0.9", "hypothesis>=6.100", "scipy>=1.10", "peft>=0.13",
                "scikit-image>=0.22", "gradio>=6.0,<7"],
    },
    entry_points={"console_scripts": ["fourm-hf=fourm_hf.cli:main"]},
)
