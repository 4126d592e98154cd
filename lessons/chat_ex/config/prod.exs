# config/prod.exs
# import_config "#{config_env()}.exs" needs a file for every environment. The lesson sets
# nothing for prod: a release could not hold dev.exs's function anyway (a release writes its
# configuration to sys.config, which has no functions).
import Config
