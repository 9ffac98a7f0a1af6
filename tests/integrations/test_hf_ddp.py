"""TrainwellTrainer under DDP through accelerate (2 gloo ranks on CPU, spawned with torchrun's environment).

Each rank trains one step on its half of 8 examples. The adapter must hand the DistributedDataParallel
wrapper to the technique (``ddp_model``), so that FGM's clean backward (``include_clean_loss=True``) runs
under ``no_sync()``: one all-reduce round per step (counted with a comm hook), and gradients equal to the
single-process step on the union batch (output mode: per-sample directions).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _technique(model):  # type: ignore[no-untyped-def]
    from trainwell.regularizers import FGM

    return FGM(model.get_input_embeddings(), epsilon=0.5, mode="output", include_clean_loss=True)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    import transformers
    from tests.integrations._tiny import collate, examples, grads, tiny_bert

    from trainwell.integrations.hf import TrainwellTrainer

    calls = [0]

    def counting_allreduce(state, bucket):  # type: ignore[no-untyped-def]
        calls[0] += 1
        fut = dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])

    class Counting(TrainwellTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            if not getattr(self, "_hooked", False):
                model.register_comm_hook(None, counting_allreduce)
                self._hooked = True
            self.seen = {k: v.clone() for k, v in inputs.items()}
            return super().training_step(model, inputs, num_items_in_batch)

    class Grab(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
            self.grads = {k.removeprefix("module."): v for k, v in grads(model).items()}

    model = tiny_bert()
    # a classifier's loss is a batch mean: without this Trainer multiplies it by the world size
    # (average_tokens_across_devices) believing the model divided it by the global item count
    model.accepts_loss_kwargs = False
    fgm = _technique(model)
    grab = Grab()
    args = transformers.TrainingArguments(
        output_dir=out_dir,
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        ddp_backend="gloo",
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = Counting(
        model=model,
        args=args,
        train_dataset=examples(8),
        data_collator=collate,
        callbacks=[grab],
        technique=fgm,
    )
    trainer.train()
    torch.save(
        {
            "grads": grab.grads,
            "calls": calls[0],
            "attached": isinstance(fgm.ddp_model, torch.nn.parallel.DistributedDataParallel),
            "world": trainer.args.world_size,
            "seen": trainer.seen,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ddp
def test_trainer_ddp_matches_single_process_union_batch(tmp_path, monkeypatch):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("gloo backend unavailable")
    from tests.integrations._tiny import assert_grads_close, collate, examples, grads, tiny_bert

    # spawned children unpickle _worker by its module name 'tests.integrations.test_hf_ddp'
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model = tiny_bert()
    model.train()
    batch = collate(examples(8))
    seen = torch.cat([r["seen"]["input_ids"] for r in ranks])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, batch["input_ids"].tolist()))
    _technique(model).step(lambda: model(**batch).loss)
    want = grads(model)
    for r in ranks:
        assert r["world"] == 2
        assert r["attached"], "the adapter did not hand the DDP wrapper to the technique"
        assert r["calls"] == 1, f"{r['calls']} all-reduce rounds: the clean backward was not under no_sync"
        assert_grads_close(r["grads"], want, atol=2e-6, rtol=1e-4)
