from nodelab.otp.config import config

# In production, as in development: a message for kate is run by the task supervisor on kate.
config("chat", remote_supervisor=lambda recipient: ("Chat.TaskSupervisor", recipient))
