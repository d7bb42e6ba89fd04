"""The MLflow pyfunc model, logged as code (MLflow "models from code").

MLflow runs this file to rebuild the model when it is loaded, so a logged
model holds no pickled Python object: loading one unpickles nothing, and
`serving.keras` is read with Keras `safe_mode=True`.
"""

import mlflow

from tasks.serving import KerasPyfunc

mlflow.models.set_model(KerasPyfunc())
