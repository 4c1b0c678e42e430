"""MultiMNIST closer to the papers' protocol: every MNIST train image used (29,000 train and 1,000 val
composites; 5,000 test composites from t10k) and 25 epochs, for the plain sum (`fixed`) and MGDA (Sener &
Koltun 2018's method), beside the two single-task baselines: the numbers the README's "Real benchmark"
section puts next to the published ones. Same network and optimiser as multimnist_methods (its BASE).
About 8 minutes on 2 CPU cores.

    make data-multimnist SIZE=full && make tune STUDY=multimnist_long && make ensemble STUDY=multimnist_long
"""

from mtl.tune.studies import load_study

_methods = load_study("multimnist_methods")
MANIFEST = "data/multimnist_full/multimnist_lr.csv"
OBJECTIVES = _methods.objectives
EPOCHS = 25
SINGLE_TASK_BASELINES = True
BASE = _methods.base
CONFIGS = {"fixed": BASE.replace(method="fixed"), "mgda": BASE.replace(method="mgda")}
