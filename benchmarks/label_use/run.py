"""The label-use investigation (docs/method.md section 6): does a label-assisted teacher use its label?

One controlled run per call, one thread: an image-only model and/or a label-assisted teacher of the same
architecture are trained with lakd's real objectives, noiser and evaluation (the learning check's loop:
random batches with flips, SGD with poly decay) on a task of tasks.py or the learning check's distractor task,
then evaluated on a validation split drawn with another seed (900) than every training split (100 + --seed), so
settings were chosen without the demo's data. Prints one JSON line and appends it to --out.

    python benchmarks/label_use/run.py --task synthetic --ntrain 2000 --model fcn-plaincnn --width 0.25 \
        --opts '{"num_convs": 1, "concat_input": false}' --steps 1500 --seed 100
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn as nn
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "method")); sys.path.insert(0, str(HERE))
from lakd.evaluation.evaluate import evaluate, label_input_fn
from lakd.method.label_noise import LabelNoiser
from lakd.method.objectives import StudentObjective, TeacherObjective
from lakd.models import build_model

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1); STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

def data(task, n, seed, size):
    if task == "distractor":
        import learning_task as lt
        x, y = lt.make_split(n, seed, size); return x, y, lt.NUM_CLASSES
    import tasks
    gen, NUM_CLASSES = tasks.get(task, size, seed)
    xs, ys = zip(*(gen(i) for i in range(n)))
    x = torch.from_numpy(np.stack(xs).astype(np.float32)).permute(0, 3, 1, 2)
    return (x - MEAN) / STD, torch.from_numpy(np.stack(ys)).long(), NUM_CLASSES

def model(args, in_ch, nc):
    if args.model == "probe":
        import learning_task as lt
        m = lt.Probe(in_ch, nc, width=int(args.width) if args.width >= 1 else 16)
    else:
        name, bb = args.model.split("-")
        kw = {}
        if args.no_deep_stem: kw["deep_stem"] = False
        kw.update(json.loads(args.opts))
        m = build_model(name, bb, nc, in_ch, width=args.width, **kw)
    if args.init == "kaiming_all":
        from lakd.models.layers import init_weights; init_weights(m)
    if args.init == "default":
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d): mod.reset_parameters()
    elif args.init == "first":
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d): mod.reset_parameters(); break
    return m

def train(m, obj, x, y, steps, batch, lr, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    m.train()
    for step in range(steps):
        for gr in opt.param_groups: gr["lr"] = lr * (1 - step / steps) ** 0.9
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb, yb = x[idx], y[idx]
        flip = (torch.rand(batch, generator=g) < 0.5).view(-1, 1, 1)
        xb = torch.where(flip.unsqueeze(1), xb.flip(-1), xb); yb = torch.where(flip, yb.flip(-1), yb)
        out = obj(m, {"image": xb, "label": yb, "step": step})
        opt.zero_grad(); out.loss.backward(); opt.step()

def miou(m, x, y, nc, fn=None):
    loader = [{"image": x[i:i+25], "label": y[i:i+25], "key": [str(j) for j in range(i, i+25)]} for i in range(0, len(x), 25)]
    r = evaluate(m, loader, nc, input_fn=fn, batch_size=25, all_reduce=False)
    return 100 * r["miou"]

p = argparse.ArgumentParser()
p.add_argument("--task", default="distractor"); p.add_argument("--size", type=int, default=64)
p.add_argument("--ntrain", type=int, default=600); p.add_argument("--nval", type=int, default=150)
p.add_argument("--model", default="probe"); p.add_argument("--width", type=float, default=0.25)
p.add_argument("--init", default="library", help="library: as built; default: every conv re-initialised with "
               "PyTorch's default; first: only the first conv; kaiming_all: lakd.models.layers.init_weights on all"); p.add_argument("--no-deep-stem", action="store_true")
p.add_argument("--steps", type=int, default=500); p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=0.05); p.add_argument("--scale", type=float, default=3.0)
p.add_argument("--dual", action="store_true"); p.add_argument("--opts", default="{}"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--roles", default="teacher,image"); p.add_argument("--tag", default="")
p.add_argument("--from-image", action="store_true", help="teacher starts from the trained image-only model")
p.add_argument("--out", default=None, help="append the result line to this JSONL file")
p.add_argument("--ft-steps", type=int, default=0); p.add_argument("--ft-lr", type=float, default=0.01)
args = p.parse_args()
torch.set_num_threads(1)
t0 = time.time()
x, y, nc = data(args.task, args.ntrain, 100 + args.seed, args.size)
xv, yv, _ = data(args.task, args.nval, 900, args.size)  # fixed validation split
res = {k: v for k, v in vars(args).items()}
tgen = time.time() - t0
noiser = LabelNoiser(nc, scale=args.scale)
img = None
if "image" in args.roles.split(",") or args.from_image:
    torch.manual_seed(args.seed); img = model(args, 3, nc)
    t1 = time.time(); train(img, StudentObjective(None, aux_weight=0.4), x, y, args.steps, args.batch, args.lr, args.seed)
    res["t_image"] = round(time.time() - t1, 1); res["image"] = round(miou(img, xv, yv, nc), 1)
if "teacher" in args.roles.split(","):
    torch.manual_seed(args.seed); t = model(args, 4, nc)
    steps, lr = args.steps, args.lr
    if args.from_image:
        from lakd.models.weights import widen_first_conv
        sd = img.state_dict(); tsd = t.state_dict()
        for k, v in sd.items():
            if v.shape != tsd[k].shape: sd[k] = widen_first_conv(v, tsd[k].shape[1])
        t.load_state_dict(sd); steps, lr = args.ft_steps, args.ft_lr
    obj = TeacherObjective(noiser, dual_path=args.dual, generator=torch.Generator().manual_seed(args.seed + 1))
    t1 = time.time(); train(t, obj, x, y, steps, args.batch, lr, args.seed)
    res["t_teacher"] = round(time.time() - t1, 1)
    res["label"] = round(miou(t, xv, yv, nc, label_input_fn(noiser, "fixed")), 1)
    res["zero"] = round(miou(t, xv, yv, nc, label_input_fn(noiser, "zeros")), 1)
res["t_gen"] = round(tgen, 1); res["t_all"] = round(time.time() - t0, 1)
print(json.dumps(res), flush=True)
if args.out:
    with open(args.out, "a") as f: f.write(json.dumps(res) + "\n")
