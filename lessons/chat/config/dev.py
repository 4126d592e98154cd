from nodelab.otp.config import config

# A message for kate is run by the task supervisor on kate.
config("chat", remote_supervisor=lambda recipient: ("Chat.TaskSupervisor", recipient))
