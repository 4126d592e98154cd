# Loaded by Application.start("chat") before the application starts, like config/config.exs.
# NODELAB_ENV chooses the environment (default dev; pytest sets test), like MIX_ENV.
from nodelab.otp.config import config_env, import_config

import_config(f"{config_env()}.py")
