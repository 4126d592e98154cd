from nodelab.otp.config import config

# In the tests every message is run by the local task supervisor: no other node needed.
config("chat", remote_supervisor=lambda _recipient: "Chat.TaskSupervisor")
